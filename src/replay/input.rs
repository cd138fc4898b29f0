//! Reading transaction history for replay: CSV or JSON Lines, plain or gzip, with a column
//! mapping so that real exports work as they are. Every row is validated like a decide
//! request; a bad row is reported with its file and line, then skipped or fatal.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::records::{Batch, Records};
use crate::state::entity::EntityKind;
use crate::txn::{self, Amount, CreditLine, EventTime, GeoPoint, OutcomeStatus, Txn};

/// The fields a history row can carry; the first four are required. `group` (e.g. a fraud
/// pattern column, `--group-by COLUMN`) only splits the report.
pub const FIELDS: [&str; 16] = [
    "customer_id",
    "transaction_id",
    "timestamp",
    "amount",
    "currency",
    "lat",
    "lon",
    "credit_limit",
    "credit_granted_at",
    "channel",
    "merchant_id",
    "outcome",
    "label",
    "group",
    "device_id",
    "ip",
];

/// How timestamps are written in the input.
#[derive(Clone, Debug)]
pub enum TimeFormat {
    /// RFC 3339 with an offset (`2026-03-01T10:00:00+08:00`).
    Rfc3339,
    /// Seconds since the Unix epoch.
    EpochSeconds,
    /// Milliseconds since the Unix epoch.
    EpochMillis,
    /// Local date and time without offset (`2026-03-01 10:00:00`), in this time zone.
    Local(jiff::tz::TimeZone),
}

/// Where each field is in the input and how timestamps are written.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// Field → column (CSV header or JSON key).
    pub columns: BTreeMap<&'static str, String>,
    /// Timestamp format.
    pub time_format: TimeFormat,
}

impl Default for Mapping {
    /// Columns named like the fields (`label` read from `is_fraud`), RFC 3339 timestamps.
    fn default() -> Mapping {
        let mut columns: BTreeMap<&'static str, String> =
            FIELDS.iter().map(|f| (*f, f.to_string())).collect();
        columns.insert("label", "is_fraud".to_string());
        Mapping {
            columns,
            time_format: TimeFormat::Rfc3339,
        }
    }
}

/// The mapping file (`--mapping mapping.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// `rfc3339` (default), `epoch_s`, `epoch_ms` or `local`.
    pub time_format: Option<String>,
    /// Time zone of `local` timestamps.
    pub timezone: Option<String>,
    /// Field → column.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
}

/// Why input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A required column is missing from a CSV header.
    #[error("{path}: no column {column:?} for {field} (columns: {found})")]
    MissingColumn {
        /// The file.
        path: String,
        /// The field.
        field: &'static str,
        /// The column looked for.
        column: String,
        /// The columns found.
        found: String,
    },
    /// The mapping is not usable.
    #[error("mapping: {0}")]
    Mapping(String),
    /// A row is bad and bad rows are fatal.
    #[error("{0}")]
    Row(RowError),
}

/// A malformed row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct RowError {
    /// The file.
    pub path: String,
    /// 1-based line (CSV: the record's line).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// One transaction of history.
///
/// Its ids and other texts share one allocation ([`RowTexts`]): a replay holds every row in
/// memory to sort them, so a row's size is what bounds the history a replay can take.
#[derive(Clone, Debug)]
pub struct Row {
    /// Index of the file in the input list.
    pub file: u32,
    /// 1-based line in that file.
    pub line: u64,
    /// Customer, transaction, channel, merchant, device, IP address and group.
    pub texts: RowTexts,
    /// Event time.
    pub at: EventTime,
    /// Amount.
    pub amount: Amount,
    /// Location.
    pub geo: Option<GeoPoint>,
    /// Credit line, when given.
    pub credit_line: Option<CreditLine>,
    /// What happened to it.
    pub outcome: Option<OutcomeStatus>,
    /// Whether it was fraud, when labelled.
    pub label: Option<bool>,
    /// Whether the amount was written with binary-float noise and read as its cent (see
    /// [`cent_of_float_noise`]).
    pub amount_normalised: bool,
}

/// The texts of a row as they are read, to build its [`RowTexts`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Texts<'a> {
    /// Customer (not empty).
    pub customer_id: &'a str,
    /// Transaction (not empty).
    pub transaction_id: &'a str,
    /// Channel.
    pub channel: Option<&'a str>,
    /// Merchant.
    pub merchant_id: Option<&'a str>,
    /// Device.
    pub device_id: Option<&'a str>,
    /// IP address.
    pub ip: Option<&'a str>,
    /// The row's group for the report (`--group-by`).
    pub group: Option<&'a str>,
}

/// A row's texts in one allocation, each ending where `ends` says. An optional text that is
/// missing is empty: an empty value is read as missing, so the two never differ.
#[derive(Clone, Debug)]
pub struct RowTexts {
    text: Box<str>,
    ends: [u32; 7],
}

impl RowTexts {
    /// The texts of `t` in one allocation.
    pub fn new(t: Texts<'_>) -> RowTexts {
        let parts = [
            t.customer_id,
            t.transaction_id,
            t.channel.unwrap_or(""),
            t.merchant_id.unwrap_or(""),
            t.device_id.unwrap_or(""),
            t.ip.unwrap_or(""),
            t.group.unwrap_or(""),
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 7];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            // Ids are capped at a few hundred bytes and a row's fields by the CSV reader's
            // record, far below 4 GiB.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        RowTexts {
            text: text.into_boxed_str(),
            ends,
        }
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn optional(&self, i: usize) -> Option<&str> {
        Some(self.get(i)).filter(|t| !t.is_empty())
    }
}

impl Row {
    /// Customer.
    pub fn customer_id(&self) -> &str {
        self.texts.get(0)
    }

    /// Transaction.
    pub fn transaction_id(&self) -> &str {
        self.texts.get(1)
    }

    /// Channel.
    pub fn channel(&self) -> Option<&str> {
        self.texts.optional(2)
    }

    /// Merchant.
    pub fn merchant_id(&self) -> Option<&str> {
        self.texts.optional(3)
    }

    /// Device.
    pub fn device_id(&self) -> Option<&str> {
        self.texts.optional(4)
    }

    /// IP address.
    pub fn ip(&self) -> Option<&str> {
        self.texts.optional(5)
    }

    /// The row's group for the report (`--group-by`), when given.
    pub fn group(&self) -> Option<&str> {
        self.texts.optional(6)
    }

    /// Its entity of `kind`, when it names one (what [`Txn::entity_key`] gives of the row's
    /// transaction, without building it).
    pub fn entity_key(&self, kind: EntityKind) -> Option<&str> {
        match kind {
            EntityKind::Merchant => self.merchant_id(),
            EntityKind::Device => self.device_id(),
            EntityKind::Ip => self.ip(),
            EntityKind::Channel => self.channel(),
        }
    }

    /// The row as a transaction for the engine.
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            transaction_id: Cow::Borrowed(self.transaction_id()),
            customer_id: Cow::Borrowed(self.customer_id()),
            at: self.at,
            amount: self.amount,
            currency: None,
            geo: self.geo,
            credit_line: self.credit_line,
            channel: self.channel().map(Cow::Borrowed),
            merchant_id: self.merchant_id().map(Cow::Borrowed),
            device_id: self.device_id().map(Cow::Borrowed),
            ip: self.ip().map(Cow::Borrowed),
        }
    }
}

impl Mapping {
    /// A mapping from a mapping file, then `FIELD=COLUMN` overrides.
    pub fn build(
        file: Option<MappingFile>,
        overrides: &[String],
        timezone: Option<&str>,
    ) -> Result<Mapping, InputError> {
        let mut mapping = Mapping::default();
        let file = file.unwrap_or_default();
        let field_of = |name: &str| -> Result<&'static str, InputError> {
            FIELDS.iter().find(|f| **f == name).copied().ok_or_else(|| {
                InputError::Mapping(format!(
                    "unknown field {name:?}; fields: {}",
                    FIELDS.join(", ")
                ))
            })
        };
        for (field, column) in &file.columns {
            mapping.columns.insert(field_of(field)?, column.clone());
        }
        for o in overrides {
            let (field, column) = o.split_once('=').ok_or_else(|| {
                InputError::Mapping(format!(
                    "--column {o:?}: write FIELD=COLUMN, such as customer_id=cust_no"
                ))
            })?;
            mapping
                .columns
                .insert(field_of(field.trim())?, column.trim().to_string());
        }
        let zone = timezone.map(str::to_string).or(file.timezone);
        mapping.time_format = match file.time_format.as_deref().unwrap_or("rfc3339") {
            "rfc3339" => TimeFormat::Rfc3339,
            "epoch_s" => TimeFormat::EpochSeconds,
            "epoch_ms" => TimeFormat::EpochMillis,
            "local" => {
                let zone = zone.ok_or_else(|| {
                    InputError::Mapping("time_format local needs a timezone".into())
                })?;
                TimeFormat::Local(
                    jiff::tz::TimeZone::get(&zone)
                        .map_err(|_| InputError::Mapping(format!("unknown time zone {zone:?}")))?,
                )
            }
            other => {
                return Err(InputError::Mapping(format!(
                    "time_format {other:?}: use rfc3339, epoch_s, epoch_ms or local"
                )));
            }
        };
        Ok(mapping)
    }

    /// With `--time-format`, replaces the file's choice.
    pub fn with_time_format(
        mut self,
        format: &str,
        timezone: Option<&str>,
    ) -> Result<Mapping, InputError> {
        let file = MappingFile {
            time_format: Some(format.to_string()),
            timezone: timezone.map(str::to_string),
            columns: BTreeMap::new(),
        };
        self.time_format = Mapping::build(Some(file), &[], timezone)?.time_format;
        Ok(self)
    }
}

/// Opens a file, decompressing it when it starts with the gzip magic.
fn open(
    path: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<Box<dyn BufRead + Send>, InputError> {
    let io = |source| InputError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file =
        BufReader::with_capacity(1 << 20, progress.wrap_read(File::open(path).map_err(io)?));
    let gzip = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(file)
    })
}

/// The cent an exporting tool meant when it wrote an amount as a binary float with noise past
/// the cents: `85.64999999999999` is 85.65, `0.30000000000000004` is 0.30. The digits after
/// the second decimal must be at least six zeros or six nines (noise is far smaller than a
/// millionth of a cent); anything else, such as `1.005`, is a genuine sub-cent amount and
/// stays refused. Exact, on the digits: no float is involved.
pub fn cent_of_float_noise(text: &str) -> Option<String> {
    const NOISE_DIGITS: usize = 6;
    let (int_part, frac) = text.trim().split_once('.')?;
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || frac.len() <= 2 + NOISE_DIGITS
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (cents, noise) = frac.split_at(2);
    let run = &noise[..NOISE_DIGITS];
    if run.bytes().all(|b| b == b'0') {
        return Some(format!("{int_part}.{cents}"));
    }
    if !run.bytes().all(|b| b == b'9') {
        return None;
    }
    // Round up one cent, carrying through the integer part.
    let mut digits: Vec<u8> = format!("{int_part}{cents}").into_bytes();
    let mut i = digits.len();
    loop {
        if i == 0 {
            digits.insert(0, b'1');
            break;
        }
        i -= 1;
        if digits[i] == b'9' {
            digits[i] = b'0';
        } else {
            digits[i] += 1;
            break;
        }
    }
    let split = digits.len() - 2;
    let text = String::from_utf8(digits).ok()?;
    Some(format!("{}.{}", &text[..split], &text[split..]))
}

/// `text` without leading and trailing whitespace, as [`str::trim`] gives it; a value that
/// starts and ends with a visible ASCII character (nearly every one) is returned as it is,
/// without the search for Unicode whitespace.
fn trim(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(a), Some(b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

struct Fields<'a> {
    values: [Option<&'a str>; FIELDS.len()],
}

fn parse_row(values: &Fields<'_>, mapping: &Mapping, file: u32, line: u64) -> Result<Row, String> {
    let get = |i: usize| values.values[i].map(trim).filter(|v| !v.is_empty());
    let required = |i: usize| get(i).ok_or_else(|| format!("{} is empty", FIELDS[i]));
    let id = |i: usize| -> Result<&str, String> {
        let v = required(i)?;
        // No more bytes than the cap means no more characters: most ids are never counted.
        if v.len() > txn::MAX_ID_CHARS && v.chars().count() > txn::MAX_ID_CHARS {
            return Err(format!(
                "{} is longer than {} characters",
                FIELDS[i],
                txn::MAX_ID_CHARS
            ));
        }
        Ok(v)
    };
    let timestamp = |text: &str| -> Result<EventTime, String> {
        let micros = |v: i128| i64::try_from(v).map_err(|_| "is out of range".to_string());
        match &mapping.time_format {
            TimeFormat::Rfc3339 => txn::parse_timestamp(text),
            TimeFormat::EpochSeconds => text
                .parse::<i64>()
                .map_err(|_| "is not whole epoch seconds".to_string())
                .and_then(|s| micros(i128::from(s) * 1_000_000)),
            TimeFormat::EpochMillis => text
                .parse::<i64>()
                .map_err(|_| "is not whole epoch milliseconds".to_string())
                .and_then(|ms| micros(i128::from(ms) * 1_000)),
            TimeFormat::Local(tz) => text
                .parse::<jiff::civil::DateTime>()
                .map_err(|_| "is not a local date and time such as 2026-03-01 10:00:00".to_string())
                .and_then(|dt| {
                    dt.to_zoned_datetime(tz.clone())
                        .map(|z| z.timestamp().as_microsecond())
                        .map_err(|_| "is outside the dates the time zone covers".to_string())
                }),
        }
    };
    let normalised = std::cell::Cell::new(false);
    let amount = |i: usize| -> Result<Amount, String> {
        let text = required(i)?;
        let a = match Amount::parse(text) {
            Ok(a) => a,
            Err(e) => match cent_of_float_noise(text) {
                Some(cent) => {
                    normalised.set(true);
                    Amount::parse(&cent).map_err(|e| format!("{} {e}", FIELDS[i]))?
                }
                None => return Err(format!("{} {e}", FIELDS[i])),
            },
        };
        if a.minor() == 0 {
            return Err(format!("{} must be greater than zero", FIELDS[i]));
        }
        Ok(a)
    };
    let degrees = |i: usize, max: f64| -> Result<Option<f64>, String> {
        get(i)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite() && d.abs() <= max)
                    .ok_or_else(|| format!("{} must be degrees within ±{max}", FIELDS[i]))
            })
            .transpose()
    };
    let at = timestamp(required(2)?).map_err(|e| format!("timestamp {e}"))?;
    if jiff::Timestamp::from_microsecond(at).is_err() {
        return Err("timestamp is outside the years -9999 to 9999".into());
    }
    let geo = match (degrees(5, 90.0)?, degrees(6, 180.0)?) {
        (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
        (None, None) => None,
        _ => return Err("lat and lon must come together".into()),
    };
    let credit_line = match (get(7), get(8)) {
        (Some(_), Some(granted)) => Some(CreditLine {
            limit: amount(7)?,
            granted_at: timestamp(granted).map_err(|e| format!("credit_granted_at {e}"))?,
        }),
        (None, None) => None,
        _ => return Err("credit_limit and credit_granted_at must come together".into()),
    };
    // Words compared without regard to case, without lowering a copy of every row's value.
    let outcome = match get(11) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("settled") => Some(OutcomeStatus::Settled),
        Some(v) if v.eq_ignore_ascii_case("failed") => Some(OutcomeStatus::Failed),
        Some(v) if v.eq_ignore_ascii_case("reversed") => Some(OutcomeStatus::Reversed),
        Some(other) => {
            return Err(format!(
                "outcome {:?} is not settled, failed or reversed",
                other.to_ascii_lowercase()
            ));
        }
    };
    let one_of = |value: &str, words: &[&str]| words.iter().any(|w| value.eq_ignore_ascii_case(w));
    let label = match get(12) {
        None => None,
        // The usual spellings first, compared as they are.
        Some("0") => Some(false),
        Some("1") => Some(true),
        Some(v) if one_of(v, &["1", "true", "yes", "fraud"]) => Some(true),
        Some(v) if one_of(v, &["0", "false", "no", "legit"]) => Some(false),
        Some(other) => {
            return Err(format!(
                "label {:?} is not 1/0, true/false or yes/no",
                other.to_ascii_lowercase()
            ));
        }
    };
    Ok(Row {
        file,
        line,
        texts: RowTexts::new(Texts {
            customer_id: id(0)?,
            transaction_id: id(1)?,
            channel: get(9),
            merchant_id: get(10),
            device_id: get(14),
            ip: get(15),
            group: get(13),
        }),
        at,
        amount: amount(3)?,
        geo,
        credit_line,
        outcome,
        label,
        amount_normalised: normalised.get(),
    })
}

/// Reads every file; returns the rows and the bad rows skipped. With `fatal`, the first bad
/// row stops everything.
pub fn read(
    paths: &[PathBuf],
    mapping: &Mapping,
    fatal: bool,
) -> Result<(Vec<Row>, Vec<RowError>), InputError> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    // Long inputs show how far reading has got, by bytes of the files (compressed bytes for
    // gzip); on a terminal only, like the deciding bar.
    let total: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let progress = if total > 32 << 20 {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "reading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid progress template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    for (index, path) in paths.iter().enumerate() {
        let file = u32::try_from(index).unwrap_or(u32::MAX);
        let name = path.display().to_string();
        let mut bad = |line: u64, message: String| -> Result<(), InputError> {
            let e = RowError {
                path: name.clone(),
                line,
                message,
            };
            if fatal {
                return Err(InputError::Row(e));
            }
            errors.push(e);
            Ok(())
        };
        let mut reader = open(path, &progress)?;
        let jsonl = is_jsonl(path, &mut reader)?;
        if jsonl {
            let mut line = String::new();
            let mut number = 0u64;
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|source| InputError::Io {
                        path: name.clone(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<BTreeMap<Cow<'_, str>, &RawValue>>(&line) {
                    Err(e) => bad(number, format!("malformed JSON: {e}"))?,
                    Ok(object) => {
                        let texts: Vec<Option<Cow<'_, str>>> = FIELDS
                            .iter()
                            .map(|f| {
                                let raw = object.get(mapping.columns[f].as_str())?;
                                let text = raw.get();
                                if text == "null" {
                                    None
                                } else if text.starts_with('"') {
                                    serde_json::from_str::<Cow<'_, str>>(text).ok()
                                } else {
                                    Some(Cow::Borrowed(text))
                                }
                            })
                            .collect();
                        let mut values = Fields {
                            values: [None; FIELDS.len()],
                        };
                        for (slot, text) in values.values.iter_mut().zip(&texts) {
                            *slot = text.as_deref();
                        }
                        match parse_row(&values, mapping, file, number) {
                            Ok(row) => rows.push(row),
                            Err(message) => bad(number, message)?,
                        }
                    }
                }
            }
        } else {
            let mut records = Records::new(reader);
            let mut header = Batch::default();
            records
                .read_into(&mut header)
                .map_err(|source| InputError::Io {
                    path: name.clone(),
                    source,
                })?;
            let headers: Vec<&[u8]> = header
                .iter()
                .next()
                .map(|h| h.fields().collect())
                .unwrap_or_default();
            let header_names: Vec<String> = headers
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
                .collect();
            let mut positions = [None; FIELDS.len()];
            for (i, field) in FIELDS.iter().enumerate() {
                let column = &mapping.columns[field];
                positions[i] = header_names.iter().position(|h| h == column);
                if i < 4 && positions[i].is_none() {
                    return Err(InputError::MissingColumn {
                        path: name,
                        field,
                        column: column.clone(),
                        found: header_names.join(", "),
                    });
                }
            }
            // The fields the mapping reads, and their columns.
            let mapped: Vec<(usize, usize)> = positions
                .iter()
                .enumerate()
                .filter_map(|(field, p)| Some((field, (*p)?)))
                .collect();
            // Decompressing and splitting records on a thread of their own while this one
            // validates them: the two take about as long, and overlap.
            std::thread::scope(|scope| -> Result<(), InputError> {
                let (full_tx, full_rx) = mpsc::sync_channel::<Split>(4);
                let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
                std::thread::Builder::new()
                    .name("replay-read".into())
                    .spawn_scoped(scope, move || split_records(records, &empty_rx, &full_tx))
                    .map_err(|source| InputError::Io {
                        path: name.clone(),
                        source,
                    })?;
                for Split { batch, failed } in full_rx {
                    for record in batch.iter() {
                        let line = record.line;
                        if record.len() != headers.len() {
                            bad(
                                line,
                                format!(
                                    "the row has {} fields and the header {}",
                                    record.len(),
                                    headers.len()
                                ),
                            )?;
                            continue;
                        }
                        let mut values = Fields {
                            values: [None; FIELDS.len()],
                        };
                        let mut utf8_ok = true;
                        // The record's bytes checked in one pass (a run of ASCII goes a word
                        // at a time; a field at a time, the fixed cost of each check was most
                        // of it), each field then cut out of them where it starts and ends on
                        // a character's boundary. Anything else, such as a bad byte in a
                        // column the mapping does not read, goes field by field as before.
                        let whole = record
                            .as_str()
                            .or_else(|| std::str::from_utf8(record.as_slice()).ok());
                        for &(field, p) in &mapped {
                            let cut = whole.zip(record.range(p)).and_then(|(w, r)| w.get(r));
                            match cut
                                .map(Ok)
                                .or_else(|| record.get(p).map(std::str::from_utf8))
                            {
                                Some(Ok(v)) => values.values[field] = Some(v),
                                Some(Err(_)) => utf8_ok = false,
                                None => {}
                            }
                        }
                        if !utf8_ok {
                            bad(line, "a field is not valid UTF-8".into())?;
                            continue;
                        }
                        match parse_row(&values, mapping, file, line) {
                            Ok(row) => rows.push(row),
                            Err(message) => bad(line, message)?,
                        }
                    }
                    if let Some(e) = failed {
                        // As the `csv` crate reported it: an I/O error has no line.
                        bad(0, format!("malformed CSV: {e}"))?;
                    }
                    // Handed back for its allocations. The reader may have stopped (end of
                    // input): then the batch is dropped.
                    let _ = empty_tx.send(batch);
                }
                Ok(())
            })?;
        }
    }
    progress.finish_and_clear();
    Ok((rows, errors))
}

/// Records a batch holds.
const BATCH: usize = 2048;

/// A batch of records split by the reader thread, and the error that ended the input, if one
/// did (after the batch's records).
struct Split {
    batch: Batch,
    failed: Option<std::io::Error>,
}

/// The reader thread: fills batches of records (reusing those handed back on `empty`) and
/// sends them on `full`, until the input ends or the receiver is gone. An error reading the
/// input itself ends the input.
fn split_records(
    mut records: Records<Box<dyn BufRead + Send>>,
    empty: &mpsc::Receiver<Batch>,
    full: &mpsc::SyncSender<Split>,
) {
    loop {
        let mut batch = empty.try_recv().unwrap_or_default();
        batch.clear();
        let mut failed = None;
        let mut done = false;
        while batch.len() < BATCH {
            match records.read_into(&mut batch) {
                Ok(true) => {}
                Ok(false) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    done = true;
                    break;
                }
            }
        }
        batch.check_text();
        if (!batch.is_empty() || failed.is_some()) && full.send(Split { batch, failed }).is_err() {
            return;
        }
        if done {
            return;
        }
    }
}

/// JSON Lines when the file name says so, or when the first non-blank byte is `{`.
fn is_jsonl(path: &Path, reader: &mut Box<dyn BufRead + Send>) -> Result<bool, InputError> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
        return Ok(true);
    }
    if name.ends_with(".csv") {
        return Ok(false);
    }
    let peek = reader.fill_buf().map_err(|source| InputError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(peek.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

/// Reads a whole file, for tests and the parse-only baseline.
pub fn read_all(path: &Path) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    open(path, &indicatif::ProgressBar::hidden())?
        .read_to_end(&mut out)
        .map_err(|source| InputError::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Mapping, cent_of_float_noise, read, trim};
    use crate::txn::OutcomeStatus;

    /// Reads `body` under the default columns from a file of its own, bad rows fatal: the
    /// first one's error is returned.
    fn read_csv(name: &str, body: &str) -> Result<Vec<super::Row>, String> {
        read_csv_bytes(name, body.as_bytes())
    }

    /// [`read_csv`] of bytes that need not be UTF-8.
    fn read_csv_bytes(name: &str, body: &[u8]) -> Result<Vec<super::Row>, String> {
        let path = std::env::temp_dir().join(format!("tripwire-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, body).unwrap();
        let read = read(std::slice::from_ref(&path), &Mapping::default(), true);
        std::fs::remove_file(&path).unwrap();
        read.map(|(rows, _)| rows).map_err(|e| e.to_string())
    }

    #[test]
    fn labels_and_outcomes_are_read_in_any_case() {
        let header = "transaction_id,customer_id,timestamp,amount,outcome,is_fraud\n";
        let rows = [
            ("Settled", "Fraud", Some(OutcomeStatus::Settled), Some(true)),
            ("FAILED", "TRUE", Some(OutcomeStatus::Failed), Some(true)),
            ("reversed", "No", Some(OutcomeStatus::Reversed), Some(false)),
            ("", "0", None, Some(false)),
            ("settled", "", Some(OutcomeStatus::Settled), None),
        ];
        let mut body = header.to_string();
        for (i, (outcome, label, _, _)) in rows.iter().enumerate() {
            body += &format!("t{i},c1,2026-03-01T10:0{i}:00Z,10.00,{outcome},{label}\n");
        }
        let read = read_csv("cases", &body).unwrap();
        let got: Vec<_> = read.iter().map(|r| (r.outcome, r.label)).collect();
        let want: Vec<_> = rows.iter().map(|&(_, _, o, l)| (o, l)).collect();
        assert_eq!(got, want);

        // A word it does not know is named, lower-cased, in the error.
        for (name, values, error) in [
            ("bad-label", ",Maybe", r#"label "maybe" is not 1/0"#),
            (
                "bad-outcome",
                "Pending,",
                r#"outcome "pending" is not settled"#,
            ),
        ] {
            let bad = read_csv(
                name,
                &format!("{header}t1,c1,2026-03-01T10:00:00Z,10.00,{values}\n"),
            );
            assert!(bad.as_ref().unwrap_err().contains(error), "{bad:?}");
        }
    }

    #[test]
    fn a_field_that_is_not_utf8_is_refused_where_it_is_read_and_only_there() {
        let header = "transaction_id,customer_id,timestamp,amount,note\n";
        let read = |name: &str, ids: &[u8], note: &[u8]| {
            let mut body = header.as_bytes().to_vec();
            body.extend_from_slice(ids);
            body.extend_from_slice(b",2026-03-01T10:00:00Z,10.00,");
            body.extend_from_slice(note);
            body.push(b'\n');
            read_csv_bytes(name, &body)
        };
        // Characters of several bytes in a field that is read.
        let rows = read("utf8-ok", "t1,cé".as_bytes(), b"ok").unwrap();
        assert_eq!(rows[0].customer_id(), "cé");
        // A bad byte in a column the mapping does not read changes nothing.
        assert_eq!(read("utf8-unread", b"t1,c1", b"\xff").unwrap().len(), 1);
        // One in a field that is read refuses the row.
        let error = "a field is not valid UTF-8";
        let bad = read("utf8-bad", b"t1,c\xff", b"ok");
        assert!(bad.as_ref().unwrap_err().contains(error), "{bad:?}");
        // So do two fields that are each half of one character (together they would be é).
        let split = read("utf8-split", b"t\xc3,\xa9c", b"ok");
        assert!(split.as_ref().unwrap_err().contains(error), "{split:?}");
    }

    #[test]
    fn float_noise_past_the_cents_is_read_as_the_cent_meant() {
        assert_eq!(
            cent_of_float_noise("85.64999999999999").as_deref(),
            Some("85.65")
        );
        assert_eq!(
            cent_of_float_noise("0.30000000000000004").as_deref(),
            Some("0.30")
        );
        assert_eq!(
            cent_of_float_noise("99.99999999999999").as_deref(),
            Some("100.00")
        );
        assert_eq!(cent_of_float_noise("9.999999999").as_deref(), Some("10.00"));
        assert_eq!(
            cent_of_float_noise("1234.560000001").as_deref(),
            Some("1234.56")
        );
    }

    #[test]
    fn a_genuine_sub_cent_amount_is_not_noise() {
        for text in [
            "1.005",
            "1.0050000000",
            "85.649",
            "85.6499",
            "1.99999",
            "abc",
            "1.5",
            "-1.000000001",
            ".300000001",
        ] {
            assert_eq!(cent_of_float_noise(text), None, "{text}");
        }
    }

    proptest::proptest! {
        /// A field is trimmed as `str::trim` trims it, whatever its first and last characters:
        /// ASCII, Unicode whitespace (no-break and ideographic spaces), or neither.
        #[test]
        fn trim_is_str_trim(
            text in proptest::string::string_regex("[ a\t\n\u{a0}\u{3000}é,.-]{0,6}").unwrap()
        ) {
            proptest::prop_assert_eq!(trim(&text), text.trim());
        }
    }
}
