//! Transactions as they arrive: the fixed-point [`Amount`], event time, and the parsing and
//! validation of the JSON bodies of the decision API.
//!
//! Everything here is pure: bytes in, a validated value or a [`TxnError`] naming the field at
//! fault out. Nothing is recorded until a request has passed all of it, so a rejected request
//! changes no state. Money never passes through a float: JSON numbers are read from their raw
//! text.

use std::borrow::Cow;
use std::fmt;

use std::cell::Cell;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

mod flat_body;

/// Decimal places carried by an [`Amount`]: amounts are counted in hundredths (minor units).
pub const AMOUNT_SCALE: u32 = 2;
const MINOR_PER_UNIT: i64 = 10i64.pow(AMOUNT_SCALE);
// `Amount::plain` reads cents.
const _: () = assert!(AMOUNT_SCALE == 2);
/// Largest accepted amount in minor units: one trillion currency units. Bounded so that sums
/// over any window and ratios against a credit limit stay far from `i64` overflow, and so an
/// amount fits the 48 bits an event keeps for it.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000 * MINOR_PER_UNIT;
/// Longest accepted `transaction_id` and `customer_id`, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// A non-negative amount of money in minor units (hundredths), exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

impl Amount {
    /// The amount with this many minor units; `None` if negative or beyond [`MAX_AMOUNT_MINOR`].
    pub fn from_minor(minor: i64) -> Option<Amount> {
        (0..=MAX_AMOUNT_MINOR)
            .contains(&minor)
            .then_some(Amount(minor))
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// Parses a plain decimal such as `499`, `499.0` or `499.00`.
    ///
    /// Digits beyond the second decimal place must be zeros: `499.000` is exact and accepted,
    /// `499.001` is over-precise and refused. Signs, exponents, spaces and empty parts are
    /// refused so that every accepted text has exactly one meaning.
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        match Amount::plain(text.as_bytes()) {
            Some(amount) => Ok(amount),
            None => Amount::parse_general(text),
        }
    }

    /// The everyday amount, read in one pass: 1 to 12 digits, then optionally a point and one
    /// or two digits. `None` for anything else, which [`Amount::parse_general`] then accepts
    /// or explains (a proptest holds the two to the same answers). The general reader's
    /// search for the point and its checks part by part were most of reading a row's amount.
    #[inline]
    fn plain(b: &[u8]) -> Option<Amount> {
        let n = b.len();
        let point = if n >= 3 && b[n - 3] == b'.' {
            n - 3
        } else if n >= 2 && b[n - 2] == b'.' {
            n - 2
        } else {
            n
        };
        let (int, frac) = b.split_at(point);
        // Twelve digits stay below the largest amount, so nothing can overflow.
        if int.is_empty() || int.len() > 12 {
            return None;
        }
        let digit = |d: u8| {
            let d = d.wrapping_sub(b'0');
            (d < 10).then_some(i64::from(d))
        };
        let mut units = 0;
        for &d in int {
            units = units * 10 + digit(d)?;
        }
        let cents = match frac {
            [] => 0,
            [_, tenths] => digit(*tenths)? * 10,
            [_, tenths, hundredths] => digit(*tenths)? * 10 + digit(*hundredths)?,
            _ => return None,
        };
        Amount::from_minor(units * MINOR_PER_UNIT + cents)
    }

    /// [`Amount::parse`] of any text.
    fn parse_general(text: &str) -> Result<Amount, AmountError> {
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(if text.starts_with('-') {
                AmountError::Negative
            } else {
                AmountError::NotDecimal
            });
        }
        let mut minor: i64 = 0;
        for b in int_part.bytes() {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or(AmountError::TooLarge)?;
            if minor > MAX_AMOUNT_MINOR {
                return Err(AmountError::TooLarge);
            }
        }
        minor = minor
            .checked_mul(MINOR_PER_UNIT)
            .ok_or(AmountError::TooLarge)?;
        if let Some(frac) = frac_part {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AmountError::NotDecimal);
            }
            let (kept, rest) = frac.split_at(frac.len().min(AMOUNT_SCALE as usize));
            if rest.bytes().any(|b| b != b'0') {
                return Err(AmountError::OverPrecise);
            }
            let mut scale = MINOR_PER_UNIT;
            for b in kept.bytes() {
                scale /= 10;
                minor += i64::from(b - b'0') * scale;
            }
        }
        Amount::from_minor(minor).ok_or(AmountError::TooLarge)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:02}",
            self.0 / MINOR_PER_UNIT,
            self.0 % MINOR_PER_UNIT
        )
    }
}

/// Why a text is not an [`Amount`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not digits with an optional decimal point.
    #[error("must be a plain decimal number such as \"499.00\"")]
    NotDecimal,
    /// A minus sign.
    #[error("must not be negative")]
    Negative,
    /// More decimals than minor units hold.
    #[error("has more than {AMOUNT_SCALE} decimal places")]
    OverPrecise,
    /// Past the largest amount held.
    #[error("is larger than the maximum of 1000000000000.00")]
    TooLarge,
}

/// Event time in microseconds since the Unix epoch. Windows are computed on this, never on the
/// wall clock.
pub type EventTime = i64;

/// Microseconds in one second, for converting durations.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// Earliest year a timestamp may carry: event times before the Unix epoch are no payment's.
pub const MIN_TIMESTAMP_YEAR: i16 = 1970;
/// Latest year a timestamp may carry (any offset from it stays inside the date range).
pub const MAX_TIMESTAMP_YEAR: i16 = 9998;

/// Parses an RFC 3339 timestamp that carries an offset (`Z` or `+08:00`). As RFC 3339 (5.6)
/// allows, `t`, `z` and a space separator are accepted too; an offset hour must be below 24
/// and the year within [`MIN_TIMESTAMP_YEAR`]..=[`MAX_TIMESTAMP_YEAR`]. Messages speak of the
/// timestamp, never of the date library.
pub fn parse_timestamp(text: &str) -> Result<EventTime, String> {
    match plain_rfc3339(text.as_bytes()) {
        Some(at) => Ok(at),
        None => parse_timestamp_by_jiff(text),
    }
}

/// [`parse_timestamp`] without the fast path for everyday timestamps: jiff reads every one.
fn parse_timestamp_by_jiff(text: &str) -> Result<EventTime, String> {
    const FORM: &str =
        "must be an RFC 3339 timestamp with an offset, such as \"2026-03-01T02:15:00+08:00\"";
    let bytes = text.as_bytes();
    if bytes.len() >= 6 {
        let offset = &bytes[bytes.len() - 6..];
        if matches!(offset[0], b'+' | b'-')
            && offset[3] == b':'
            && offset[1..3].iter().all(u8::is_ascii_digit)
            && (offset[1] - b'0') * 10 + (offset[2] - b'0') > 23
        {
            return Err(format!("{FORM}: an offset runs from -23:59 to +23:59"));
        }
    }
    let ts: jiff::Timestamp = text.parse().map_err(|_| FORM.to_string())?;
    let year = ts.to_zoned_datetime(jiff::tz::TimeZone::UTC).year();
    if !(MIN_TIMESTAMP_YEAR..=MAX_TIMESTAMP_YEAR).contains(&year) {
        return Err(format!(
            "must be a time between the years {MIN_TIMESTAMP_YEAR} and {MAX_TIMESTAMP_YEAR}"
        ));
    }
    Ok(ts.as_microsecond())
}

/// The everyday timestamp, read without the general parser: `YYYY-MM-DD`, `T` (or `t` or a
/// space), `HH:MM:SS`, up to nine fraction digits, then `Z` (or `z`) or `±HH:MM` with an hour
/// under 24. Every field is range-checked (seconds to 59) and the instant must fall in the
/// accepted years; anything else is `None`, and [`parse_timestamp`] hands it to jiff, which
/// then accepts or explains it. What this accepts, jiff reads as the same instant (a proptest
/// holds the two side by side).
fn plain_rfc3339(b: &[u8]) -> Option<EventTime> {
    /// The accepted instants, in seconds: from the first day of the first accepted year to the
    /// first day after the last.
    const ACCEPTED: std::ops::Range<i64> = days_from_civil(MIN_TIMESTAMP_YEAR as i64, 1, 1) * 86_400
        ..days_from_civil(MAX_TIMESTAMP_YEAR as i64 + 1, 1, 1) * 86_400;
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        b.get(range)?.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    // `YYYY-MM-` and `HH:MM:SS` eight bytes at a time (see `two_digit_pairs`), the day alone.
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    let date = two_digit_pairs(word(0), *b"0000-00-")?;
    let time = two_digit_pairs(word(11), *b"00:00:00")?;
    let pair = |pairs: u64, at: usize| i64::from((pairs >> (8 * at)) as u8);
    let (year, month, day) = (
        pair(date, 0) * 100 + pair(date, 2),
        pair(date, 5),
        number(8..10)?,
    );
    let (hour, minute, second) = (pair(time, 0), pair(time, 3), pair(time, 6));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Up to nine fraction digits, kept to the microsecond (truncated, as jiff's
    // `as_microsecond` does; every accepted instant is after 1970, so truncation is flooring).
    let mut at = 19;
    let mut micros = 0;
    if b[at] == b'.' {
        let digits = b[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let fraction = number(at + 1..at + 1 + digits)?;
        micros = match digits {
            ..=6 => fraction * 10i64.pow(6 - digits as u32),
            _ => fraction / 10i64.pow(digits as u32 - 6),
        };
        at += 1 + digits;
    }
    let offset_seconds = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (number(at + 1..at + 3)?, number(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let local_seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let utc_seconds = local_seconds - offset_seconds;
    ACCEPTED
        .contains(&utc_seconds)
        .then(|| utc_seconds * MICROS_PER_SECOND + micros)
}

/// Eight bytes of a timestamp read at once against `form`, whose `0`s stand for digits and
/// whose other bytes must be there as they are: `None` unless they match, else each byte's
/// digit times ten plus the next byte's (so each two-digit number written from byte `i` is
/// byte `i` of the result). Checking and reading the digits a byte at a time was most of
/// reading a timestamp.
#[inline(always)]
fn two_digit_pairs(word: u64, form: [u8; 8]) -> Option<u64> {
    const ZEROS: u64 = u64::from_ne_bytes([b'0'; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0xf0; 8]);
    const SIXES: u64 = u64::from_ne_bytes([0x06; 8]);
    let digits = u64::from_le_bytes(form.map(|c| if c == b'0' { 0xff } else { 0 }));
    let form = u64::from_le_bytes(form);
    if word & !digits != form & !digits {
        return None;
    }
    // Separators read as `0`; then every byte must be 0x30..=0x39: its high half 3, and
    // still 3 with 6 added (no carry crosses a byte: no byte passing the first test exceeds
    // 0x3f).
    let ascii = (word & digits) | (ZEROS & !digits);
    if ascii & HIGH != ZEROS & HIGH || (ascii + SIXES) & HIGH != ZEROS & HIGH {
        return None;
    }
    let values = ascii - ZEROS;
    // Each byte at most 9, times ten at most 90, plus the next byte's at most 99: no byte
    // carries into the next.
    Some(values * 10 + (values >> 8))
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's `days_from_civil`).
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats an event time as RFC 3339 in UTC.
pub fn format_timestamp(at: EventTime) -> String {
    match jiff::Timestamp::from_microsecond(at) {
        Ok(ts) => ts.to_string(),
        Err(_) => at.to_string(),
    }
}

/// A point on the earth, degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoPoint {
    /// Latitude in degrees, −90 to 90.
    pub lat: f64,
    /// Longitude in degrees, −180 to 180.
    pub lon: f64,
}

/// A customer's credit line: the limit and when it was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditLine {
    /// The line's limit.
    pub limit: Amount,
    /// When the line was granted (or last changed), event time.
    pub granted_at: EventTime,
}

/// A validated transaction from `POST /v1/decide`, borrowing its strings from the request body.
#[derive(Clone, Debug, PartialEq)]
pub struct Txn<'a> {
    /// The gateway's transaction id, unique per customer.
    pub transaction_id: Cow<'a, str>,
    /// The customer whose credit line is drawn.
    pub customer_id: Cow<'a, str>,
    /// Event time of the transaction.
    pub at: EventTime,
    /// Amount drawn or paid.
    pub amount: Amount,
    /// ISO 4217 code, when sent; informational, the product runs in one currency.
    pub currency: Option<[u8; 3]>,
    /// Where the transaction happened, when known.
    pub geo: Option<GeoPoint>,
    /// The customer's current credit line, when the gateway sends it.
    pub credit_line: Option<CreditLine>,
    /// Channel (app, web, pos...), when sent.
    pub channel: Option<Cow<'a, str>>,
    /// Merchant (or terminal), when sent.
    pub merchant_id: Option<Cow<'a, str>>,
    /// The customer's device, when sent.
    pub device_id: Option<Cow<'a, str>>,
    /// The client's IP address (or any network label), when sent.
    pub ip: Option<Cow<'a, str>>,
}

impl Txn<'_> {
    /// The key of an entity kind in this transaction, when sent.
    pub fn entity_key(&self, kind: crate::state::entity::EntityKind) -> Option<&str> {
        entity_field(
            kind,
            [&self.merchant_id, &self.device_id, &self.ip, &self.channel],
        )
    }
}

/// The field of `kind` among (merchant, device, IP, channel).
fn entity_field<'s>(
    kind: crate::state::entity::EntityKind,
    fields: [&'s Option<Cow<'_, str>>; 4],
) -> Option<&'s str> {
    use crate::state::entity::EntityKind;
    let i = match kind {
        EntityKind::Merchant => 0,
        EntityKind::Device => 1,
        EntityKind::Ip => 2,
        EntityKind::Channel => 3,
    };
    fields[i].as_deref()
}

/// A request body that is not a valid transaction: what is wrong, and which field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TxnError {
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    /// What is wrong, for a person.
    pub message: String,
}

impl TxnError {
    // Errors are the rare path: kept out of line, so that the everyday decide's code stays
    // dense in the instruction cache.
    #[cold]
    fn field(field: &'static str, message: impl Into<String>) -> TxnError {
        TxnError {
            field: Some(field),
            message: format!("{field}: {}", message.into()),
        }
    }

    #[cold]
    fn body(message: impl Into<String>) -> TxnError {
        TxnError {
            field: None,
            message: message.into(),
        }
    }
}

fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// Reads a JSON string, borrowing it when it has no escapes.
fn read_str<'a>(field: &'static str, raw: &'a RawValue) -> Result<Cow<'a, str>, TxnError> {
    read_str_text(field, raw.get())
}

/// [`read_str`] from the raw JSON text of a value.
fn read_str_text<'a>(field: &'static str, text: &'a str) -> Result<Cow<'a, str>, TxnError> {
    if !text.starts_with('"') {
        return Err(TxnError::field(field, "must be a string"));
    }
    if let Some(inner) = text.get(1..text.len() - 1)
        && text.len() >= 2
        && !inner.contains(['\\', '"'])
    {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Cow<'a, str>>(text)
        .map_err(|e| TxnError::field(field, format!("is not a valid JSON string ({e})")))
}

fn read_id<'a>(field: &'static str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, TxnError> {
    let raw = present(raw).ok_or_else(|| TxnError::field(field, "is required"))?;
    let id = read_str(field, raw)?;
    let chars = id.chars().count();
    if chars == 0 || id.trim().is_empty() {
        return Err(TxnError::field(field, "must not be empty"));
    }
    if chars > MAX_ID_CHARS {
        return Err(TxnError::field(
            field,
            format!("must be at most {MAX_ID_CHARS} characters, got {chars}"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(TxnError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(id)
}

/// Reads an amount given as a decimal string (`"499.00"`) or a JSON number (`499`), from its
/// raw text.
pub fn read_amount(field: &'static str, raw: &RawValue) -> Result<Amount, TxnError> {
    read_amount_text(field, raw.get())
}

/// [`read_amount`] from the raw JSON text of a value.
fn read_amount_text(field: &'static str, text: &str) -> Result<Amount, TxnError> {
    let decimal: Cow<'_, str> = if text.starts_with('"') {
        read_str_text(field, text)?
    } else {
        Cow::Borrowed(text)
    };
    let amount =
        Amount::parse(&decimal).map_err(|e| TxnError::field(field, format!("{e}, got {text}")))?;
    Ok(amount)
}

/// A positive amount from the raw JSON text of a value (`None`: absent or null).
fn read_positive_amount(field: &'static str, raw: Option<&str>) -> Result<Amount, TxnError> {
    let raw = raw.ok_or_else(|| TxnError::field(field, "is required"))?;
    let amount = read_amount_text(field, raw)?;
    if amount.minor() == 0 {
        return Err(TxnError::field(field, "must be greater than zero"));
    }
    Ok(amount)
}

fn read_timestamp(field: &'static str, raw: Option<&RawValue>) -> Result<EventTime, TxnError> {
    let raw = present(raw).ok_or_else(|| TxnError::field(field, "is required"))?;
    let text = read_str(field, raw)?;
    parse_timestamp(&text).map_err(|e| TxnError::field(field, e))
}

fn malformed(e: &serde_json::Error) -> TxnError {
    TxnError::body(format!("malformed JSON body: {e}"))
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// The fields of a decide body, each read straight into its type in one pass over the body.
#[derive(Debug, Default, PartialEq)]
struct DecideFields<'a> {
    transaction_id: Option<Cow<'a, str>>,
    customer_id: Option<Cow<'a, str>>,
    timestamp: Option<Cow<'a, str>>,
    /// Kept as raw JSON text (a quoted string or a number; `None` for null) so that a number
    /// is read from its text, never through a float.
    amount: Option<&'a str>,
    currency: Option<Cow<'a, str>>,
    lat: Option<f64>,
    lon: Option<f64>,
    credit_limit: Option<&'a str>,
    credit_granted_at: Option<Cow<'a, str>>,
    channel: Option<Cow<'a, str>>,
    merchant_id: Option<Cow<'a, str>>,
    device_id: Option<Cow<'a, str>>,
    ip: Option<Cow<'a, str>>,
}

/// Which field was being read when the JSON deserializer failed, so the error can name it.
#[derive(Default)]
struct FieldCursor {
    field: Cell<Option<&'static str>>,
    duplicate: Cell<bool>,
}

struct DecideVisitor<'c>(&'c FieldCursor);

fn take_once<'de, T, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    map: &mut A,
    cursor: &FieldCursor,
    read: impl FnOnce(&mut A) -> Result<Option<T>, A::Error>,
) -> Result<(), A::Error> {
    if slot.is_some() {
        cursor.duplicate.set(true);
        return Err(de::Error::custom("duplicate field"));
    }
    *slot = read(map)?;
    Ok(())
}

impl<'de> Visitor<'de> for DecideVisitor<'_> {
    type Value = DecideFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DecideFields<'de>, A::Error> {
        let mut out = DecideFields::default();
        let cursor = self.0;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let text = |m: &mut A| m.next_value::<Option<Text<'de>>>().map(|t| t.map(|t| t.0));
            let raw = |m: &mut A| {
                m.next_value::<Option<&'de RawValue>>()
                    .map(|r| present(r).map(RawValue::get))
            };
            let number = |m: &mut A| m.next_value::<Option<f64>>();
            let field: &'static str = match &*key.0 {
                "transaction_id" => "transaction_id",
                "customer_id" => "customer_id",
                "timestamp" => "timestamp",
                "amount" => "amount",
                "currency" => "currency",
                "lat" => "lat",
                "lon" => "lon",
                "credit_limit" => "credit_limit",
                "credit_granted_at" => "credit_granted_at",
                "channel" => "channel",
                "merchant_id" => "merchant_id",
                "device_id" => "device_id",
                "ip" => "ip",
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                    continue;
                }
            };
            cursor.field.set(Some(field));
            match field {
                "transaction_id" => take_once(&mut out.transaction_id, &mut map, cursor, text)?,
                "customer_id" => take_once(&mut out.customer_id, &mut map, cursor, text)?,
                "timestamp" => take_once(&mut out.timestamp, &mut map, cursor, text)?,
                "amount" => take_once(&mut out.amount, &mut map, cursor, raw)?,
                "currency" => take_once(&mut out.currency, &mut map, cursor, text)?,
                "lat" => take_once(&mut out.lat, &mut map, cursor, number)?,
                "lon" => take_once(&mut out.lon, &mut map, cursor, number)?,
                "credit_limit" => take_once(&mut out.credit_limit, &mut map, cursor, raw)?,
                "credit_granted_at" => {
                    take_once(&mut out.credit_granted_at, &mut map, cursor, text)?
                }
                "channel" => take_once(&mut out.channel, &mut map, cursor, text)?,
                "device_id" => take_once(&mut out.device_id, &mut map, cursor, text)?,
                "ip" => take_once(&mut out.ip, &mut map, cursor, text)?,
                _ => take_once(&mut out.merchant_id, &mut map, cursor, text)?,
            }
            cursor.field.set(None);
        }
        Ok(out)
    }
}

fn expected_type(field: &str) -> &'static str {
    match field {
        "lat" | "lon" => "must be a number of degrees",
        _ => "must be a string",
    }
}

fn check_id<'a>(field: &'static str, id: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, TxnError> {
    let id = id.ok_or_else(|| TxnError::field(field, "is required"))?;
    // The common ASCII id takes the byte paths; the general path only for the rest.
    let ascii = id.is_ascii();
    let blank = if ascii {
        id.bytes().all(|b| b.is_ascii_whitespace())
    } else {
        id.trim().is_empty()
    };
    if id.is_empty() || blank {
        return Err(TxnError::field(field, "must not be empty"));
    }
    // No more characters than bytes: only a long id is counted.
    if id.len() > MAX_ID_CHARS {
        let chars = id.chars().count();
        if chars > MAX_ID_CHARS {
            return Err(TxnError::field(
                field,
                format!("must be at most {MAX_ID_CHARS} characters, got {chars}"),
            ));
        }
    }
    let control = if ascii {
        has_ascii_control(id.as_bytes())
    } else {
        id.chars().any(char::is_control)
    };
    if control {
        return Err(TxnError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(id)
}

/// Eight bytes at once (`word`, little-endian): the top bit of each byte below `n` (at most
/// 0x80) among those with their own top bit clear. The lowest flag is exact, and so is whether
/// any is set: a borrow can flag a byte wrongly, but only above one flagged rightly.
#[inline(always)]
fn bytes_below(word: u64, n: u8) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH
}

/// The same as [`bytes_below`], for the bytes of `word` equal to `byte`.
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ u64::from_ne_bytes([byte; 8]), 1)
}

/// Whether ASCII `bytes` hold a control character (below 0x20, or DEL), eight bytes at a time.
fn has_ascii_control(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("a chunk is eight bytes"));
        if bytes_below(x, 0x20) | bytes_equal(x, 0x7f) != 0 {
            return true;
        }
    }
    words.remainder().iter().any(u8::is_ascii_control)
}

fn check_label<'a>(
    field: &'static str,
    label: Option<Cow<'a, str>>,
) -> Result<Option<Cow<'a, str>>, TxnError> {
    // No more characters than bytes: only a long label is counted.
    if let Some(text) = &label
        && text.len() > MAX_ID_CHARS
        && text.chars().count() > MAX_ID_CHARS
    {
        return Err(TxnError::field(
            field,
            format!("must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(label)
}

fn check_timestamp(
    field: &'static str,
    text: Option<&str>,
    parse: impl Fn(&str) -> Result<EventTime, String>,
) -> Result<EventTime, TxnError> {
    let text = text.ok_or_else(|| TxnError::field(field, "is required"))?;
    parse(text).map_err(|e| TxnError::field(field, e))
}

fn check_degrees(field: &'static str, value: f64, max: f64) -> Result<f64, TxnError> {
    if !value.is_finite() || value.abs() > max {
        return Err(TxnError::field(
            field,
            format!("must be between -{max} and {max}, got {value}"),
        ));
    }
    Ok(value)
}

/// Parses and validates a `POST /v1/decide` body.
///
/// One pass over the body reads every known field into its type; unknown fields are skipped;
/// a field given twice is refused (a gateway and tripwire must never read two different
/// amounts from one body). The everyday flat body is read by a fast reader of its own; any
/// other body, and every body in error, by serde_json, which names what is wrong.
pub fn parse_decide(body: &[u8]) -> Result<Txn<'_>, TxnError> {
    let mut raw = DecideFields::default();
    if !flat_body::read_into(body, &mut raw) {
        raw = read_decide_fields(body)?;
    }
    check_decide(raw, parse_timestamp)
}

/// [`parse_decide`] by the general readers alone: every body through serde_json, every
/// timestamp through jiff. The fast readers must agree with it on whatever they accept; the
/// `decide_request` fuzz target holds the two together.
pub fn parse_decide_by_general_readers(body: &[u8]) -> Result<Txn<'_>, TxnError> {
    check_decide(read_decide_fields(body)?, parse_timestamp_by_jiff)
}

/// The general reader of a decide body: serde_json over any JSON, naming the field at fault.
fn read_decide_fields(body: &[u8]) -> Result<DecideFields<'_>, TxnError> {
    let cursor = FieldCursor::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_map(DecideVisitor(&cursor))
        .and_then(|fields| de.end().map(|()| fields));
    let raw = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            return Err(match (cursor.field.get(), e.classify()) {
                (Some(field), _) if cursor.duplicate.get() => {
                    TxnError::field(field, "appears more than once")
                }
                (Some(field), serde_json::error::Category::Data) => {
                    TxnError::field(field, expected_type(field))
                }
                _ => malformed(&e),
            });
        }
    };
    Ok(raw)
}

/// Validates the fields of a decide body into a transaction.
/// `timestamp` reads RFC 3339: [`parse_timestamp`], or jiff alone.
fn check_decide(
    raw: DecideFields<'_>,
    timestamp: impl Fn(&str) -> Result<EventTime, String> + Copy,
) -> Result<Txn<'_>, TxnError> {
    let transaction_id = check_id("transaction_id", raw.transaction_id)?;
    let customer_id = check_id("customer_id", raw.customer_id)?;
    let at = check_timestamp("timestamp", raw.timestamp.as_deref(), timestamp)?;
    let amount = read_positive_amount("amount", raw.amount)?;
    let currency = match raw.currency.as_deref() {
        None => None,
        Some(code) => match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Some([*a, *b, *c]),
            _ => {
                return Err(TxnError::field(
                    "currency",
                    format!("must be a three-letter ISO 4217 code such as \"CNY\", got {code:?}"),
                ));
            }
        },
    };
    let geo = match (raw.lat, raw.lon) {
        (None, None) => None,
        (Some(lat), Some(lon)) => Some(GeoPoint {
            lat: check_degrees("lat", lat, 90.0)?,
            lon: check_degrees("lon", lon, 180.0)?,
        }),
        (Some(_), None) => return Err(TxnError::field("lon", "is required when lat is given")),
        (None, Some(_)) => return Err(TxnError::field("lat", "is required when lon is given")),
    };
    let credit_line = match (raw.credit_limit, raw.credit_granted_at.as_deref()) {
        (None, None) => None,
        (Some(limit), Some(granted_at)) => Some(CreditLine {
            limit: read_positive_amount("credit_limit", Some(limit))?,
            granted_at: check_timestamp("credit_granted_at", Some(granted_at), timestamp)?,
        }),
        (Some(_), None) => {
            return Err(TxnError::field(
                "credit_granted_at",
                "is required when credit_limit is given",
            ));
        }
        (None, Some(_)) => {
            return Err(TxnError::field(
                "credit_limit",
                "is required when credit_granted_at is given",
            ));
        }
    };
    Ok(Txn {
        transaction_id,
        customer_id,
        at,
        amount,
        currency,
        geo,
        credit_line,
        channel: check_label("channel", raw.channel)?,
        merchant_id: check_label("merchant_id", raw.merchant_id)?,
        device_id: check_label("device_id", raw.device_id)?,
        ip: check_label("ip", raw.ip)?,
    })
}

#[derive(Deserialize)]
struct RawCreditLine<'a> {
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
    #[serde(borrow)]
    granted_at: Option<&'a RawValue>,
}

/// Parses a `PUT /v1/customers/{id}/credit-line` body.
pub fn parse_credit_line(body: &[u8]) -> Result<CreditLine, TxnError> {
    let raw: RawCreditLine<'_> = serde_json::from_slice(body).map_err(|e| malformed(&e))?;
    Ok(CreditLine {
        limit: read_positive_amount("limit", present(raw.limit).map(RawValue::get))?,
        granted_at: read_timestamp("granted_at", raw.granted_at)?,
    })
}

/// What the gateway reports happened to a decided transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// The payment went through.
    Settled,
    /// The payment failed (declined downstream, insufficient funds...).
    Failed,
    /// The payment was reversed after settling.
    Reversed,
}

/// What a report says of a decided transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportedStatus {
    /// How the payment ended.
    Outcome(OutcomeStatus),
    /// Confirmed fraud (a chargeback, a customer's claim upheld): independent of how the
    /// payment ended, and counted by `fraud_count` / `fraud_rate`.
    Fraud,
}

/// A validated `POST /v1/outcomes` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeReport<'a> {
    /// The transaction the outcome is for.
    pub transaction_id: Cow<'a, str>,
    /// Its customer.
    pub customer_id: Cow<'a, str>,
    /// What happened.
    pub status: ReportedStatus,
    /// With `fraud`: the transaction's own details, so the report reaches its merchant,
    /// device, IP and channel even after the transaction has left the customer's history.
    pub fraud: FraudDetails<'a>,
}

/// What a fraud report may carry about its transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FraudDetails<'a> {
    /// The transaction's time.
    pub timestamp: Option<EventTime>,
    /// When the fraud was reported (informational).
    pub reported_at: Option<EventTime>,
    /// Its merchant.
    pub merchant_id: Option<Cow<'a, str>>,
    /// Its device.
    pub device_id: Option<Cow<'a, str>>,
    /// Its IP address.
    pub ip: Option<Cow<'a, str>>,
    /// Its channel.
    pub channel: Option<Cow<'a, str>>,
}

impl FraudDetails<'_> {
    /// The key of an entity kind, when carried.
    pub fn entity_key(&self, kind: crate::state::entity::EntityKind) -> Option<&str> {
        entity_field(
            kind,
            [&self.merchant_id, &self.device_id, &self.ip, &self.channel],
        )
    }
}

#[derive(Deserialize)]
struct RawOutcome<'a> {
    #[serde(borrow)]
    transaction_id: Option<&'a RawValue>,
    #[serde(borrow)]
    customer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    reported_at: Option<&'a RawValue>,
    #[serde(borrow)]
    merchant_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
}

/// Parses a `POST /v1/outcomes` body.
pub fn parse_outcome(body: &[u8]) -> Result<OutcomeReport<'_>, TxnError> {
    let raw: RawOutcome<'_> = serde_json::from_slice(body).map_err(|e| malformed(&e))?;
    let transaction_id = read_id("transaction_id", raw.transaction_id)?;
    let customer_id = read_id("customer_id", raw.customer_id)?;
    let status_raw = present(raw.status).ok_or_else(|| TxnError::field("status", "is required"))?;
    let status = match &*read_str("status", status_raw)? {
        "settled" => ReportedStatus::Outcome(OutcomeStatus::Settled),
        "failed" => ReportedStatus::Outcome(OutcomeStatus::Failed),
        "reversed" => ReportedStatus::Outcome(OutcomeStatus::Reversed),
        "fraud" => ReportedStatus::Fraud,
        _ => {
            return Err(TxnError::field(
                "status",
                format!(
                    "must be one of \"settled\", \"failed\", \"reversed\", \"fraud\", got {}",
                    status_raw.get()
                ),
            ));
        }
    };
    let fraud = FraudDetails {
        timestamp: present(raw.timestamp)
            .map(|r| read_timestamp("timestamp", Some(r)))
            .transpose()?,
        reported_at: present(raw.reported_at)
            .map(|r| read_timestamp("reported_at", Some(r)))
            .transpose()?,
        merchant_id: check_label("merchant_id", raw.merchant_id)?,
        device_id: check_label("device_id", raw.device_id)?,
        ip: check_label("ip", raw.ip)?,
        channel: check_label("channel", raw.channel)?,
    };
    if status != ReportedStatus::Fraud {
        let carried = [
            ("timestamp", fraud.timestamp.is_some()),
            ("reported_at", fraud.reported_at.is_some()),
            ("merchant_id", fraud.merchant_id.is_some()),
            ("device_id", fraud.device_id.is_some()),
            ("ip", fraud.ip.is_some()),
            ("channel", fraud.channel.is_some()),
        ];
        if let Some((field, _)) = carried.iter().find(|(_, given)| *given) {
            return Err(TxnError::field(
                field,
                "is only taken with status \"fraud\" (it locates the transaction for its merchant, device, IP and channel)",
            ));
        }
    }
    Ok(OutcomeReport {
        transaction_id,
        customer_id,
        status,
        fraud,
    })
}

/// Validates a customer id taken from a URL path.
pub fn validate_customer_id(id: &str) -> Result<(), TxnError> {
    let chars = id.chars().count();
    if chars == 0 || id.trim().is_empty() {
        return Err(TxnError::field("customer_id", "must not be empty"));
    }
    if chars > MAX_ID_CHARS {
        return Err(TxnError::field(
            "customer_id",
            format!("must be at most {MAX_ID_CHARS} characters, got {chars}"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(TxnError::field(
            "customer_id",
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amount(text: &str) -> Result<i64, AmountError> {
        Amount::parse(text).map(Amount::minor)
    }

    #[test]
    fn timestamps_follow_rfc_3339_and_refusals_name_no_library() {
        let utc = parse_timestamp("2026-03-01T02:15:00Z").unwrap();
        assert_eq!(
            parse_timestamp("2026-03-01t02:15:00z"),
            Ok(utc),
            "RFC 3339 allows t and z"
        );
        assert_eq!(
            parse_timestamp("2026-03-01 02:15:00Z"),
            Ok(utc),
            "and a space"
        );
        assert_eq!(parse_timestamp("2026-03-01T10:15:00+08:00"), Ok(utc));
        for bad in [
            "2026-03-01T02:15:00+24:00",
            "0000-03-01T02:15:00Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-01:00",
            "2026-03-01T02:15:00",
            "yesterday",
        ] {
            let err = parse_timestamp(bad).unwrap_err();
            assert!(err.starts_with("must be"), "{bad}: {err}");
            assert!(
                !err.contains("jiff") && !err.contains("parsing"),
                "{bad}: {err}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// Whatever the plain reader accepts, jiff reads as the same instant.
        #[test]
        fn plain_timestamps_read_as_jiff_reads_them(
            year in prop_oneof![1965i64..1975, 1999i64..2101, 9995i64..10000],
            month in 0i64..14,
            day in 0i64..33,
            hour in 0i64..25,
            minute in 0i64..61,
            second in 0i64..61,
            fraction in prop::option::of("[0-9]{0,10}"),
            separator in prop::sample::select(vec!['T', 't', ' ', 'x']),
            offset in prop_oneof![
                Just("Z".to_string()),
                Just("z".to_string()),
                (prop::sample::select(vec!['+', '-']), 0u32..25, 0u32..61)
                    .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
            ],
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!(
                "{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{fraction}{offset}"
            );
            if let Some(at) = plain_rfc3339(text.as_bytes()) {
                prop_assert_eq!(Ok(at), parse_timestamp_by_jiff(&text), "{}", text);
            }
        }
    }

    proptest! {
        /// The word-at-a-time control check finds a control byte (or DEL) wherever it falls in
        /// a word, and nothing else.
        #[test]
        fn ascii_control_bytes_are_found_eight_at_a_time(
            bytes in prop::collection::vec(
                prop_oneof![8 => 0x20u8..0x7f, 1 => 0u8..0x20, 1 => Just(0x7fu8)],
                0..40,
            ),
        ) {
            for from in 0..=bytes.len() {
                let tail = &bytes[from..];
                prop_assert_eq!(
                    has_ascii_control(tail),
                    tail.iter().any(u8::is_ascii_control)
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// An everyday timestamp with one or two bytes changed to anything: whatever the plain
        /// reader still accepts, jiff reads as the same instant.
        #[test]
        fn plain_timestamps_with_any_bytes_changed_read_as_jiff_reads_them(
            at in 0usize..25,
            byte in any::<u8>(),
            other_at in 0usize..25,
            other in prop_oneof![Just(b'0'), Just(b'9'), Just(b':'), Just(b'/'), any::<u8>()],
        ) {
            let mut text = *b"2024-02-29T23:59:58+05:30";
            text[at] = byte;
            text[other_at] = other;
            if let Some(at) = plain_rfc3339(&text) {
                let text = std::str::from_utf8(&text).expect("the reader accepts ASCII only");
                prop_assert_eq!(Ok(at), parse_timestamp_by_jiff(text), "{}", text);
            }
        }
    }

    #[test]
    fn everyday_timestamps_take_the_plain_reader() {
        for text in [
            "2026-03-01T02:15:00Z",
            "2026-03-01T10:15:00+08:00",
            "2024-02-29T23:59:59.123456789-05:30",
            "2026-03-01 02:15:00.5z",
        ] {
            let at = plain_rfc3339(text.as_bytes()).expect(text);
            assert_eq!(Ok(at), parse_timestamp_by_jiff(text), "{text}");
        }
        for text in [
            "2026-02-29T00:00:00Z",
            "2026-03-01T24:00:00Z",
            "2026-03-01T23:59:60Z",
            "1969-12-31T23:59:59Z",
            "2026-03-01T02:15:00+24:00",
            "2026-03-01T02:15:00",
            "2026-03-01T02:15:00.Z",
        ] {
            assert_eq!(plain_rfc3339(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn equal_amounts_parse_equal_whatever_the_spelling() {
        assert_eq!(amount("200"), Ok(20_000));
        assert_eq!(amount("200.00"), Ok(20_000));
        assert_eq!(amount("200.0"), Ok(20_000));
        assert_eq!(amount("200.000"), Ok(20_000));
        assert_eq!(amount("200.01"), Ok(20_001));
        assert_eq!(amount("0.5"), Ok(50));
    }

    #[test]
    fn rejects_amounts_that_are_not_exact_decimals() {
        assert_eq!(amount("200.001"), Err(AmountError::OverPrecise));
        assert_eq!(amount("-5"), Err(AmountError::Negative));
        assert_eq!(amount("NaN"), Err(AmountError::NotDecimal));
        assert_eq!(amount("1e3"), Err(AmountError::NotDecimal));
        assert_eq!(amount(""), Err(AmountError::NotDecimal));
        assert_eq!(amount("5."), Err(AmountError::NotDecimal));
        assert_eq!(amount(".5"), Err(AmountError::NotDecimal));
        assert_eq!(amount("+5"), Err(AmountError::NotDecimal));
        assert_eq!(amount(" 5"), Err(AmountError::NotDecimal));
        assert_eq!(
            amount("99999999999999999999999"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(amount("1000000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(amount("1000000000000.00"), Ok(MAX_AMOUNT_MINOR));
    }

    proptest! {
        #[test]
        fn amount_display_round_trips(minor in 0..=MAX_AMOUNT_MINOR) {
            let a = Amount::from_minor(minor).unwrap();
            prop_assert_eq!(Amount::parse(&a.to_string()), Ok(a));
        }

        #[test]
        fn amount_parse_never_panics(text in "\\PC{0,24}") {
            let _ = Amount::parse(&text);
        }

        /// The one-pass reader of everyday amounts answers as the general one does.
        #[test]
        fn plain_amounts_read_as_the_general_reader_reads_them(
            text in "[0-9]{0,14}(\\.[0-9]{0,4})?|[0-9.+ e-]{0,16}|[0-9]{11,13}\\.[0-9]{1,3}"
        ) {
            prop_assert_eq!(Amount::parse(&text), Amount::parse_general(&text), "{}", text);
        }
    }

    const GOOD: &str = r#"{"transaction_id":"t1","customer_id":"c1","timestamp":"2026-03-01T02:15:00+08:00","amount":"499.00"}"#;

    #[test]
    fn parses_a_minimal_decide_body() {
        let txn = parse_decide(GOOD.as_bytes()).unwrap();
        assert_eq!(txn.transaction_id, "t1");
        assert_eq!(txn.amount.minor(), 49_900);
        assert_eq!(
            txn.at,
            "2026-02-28T18:15:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_microsecond()
        );
        assert!(txn.geo.is_none() && txn.credit_line.is_none());
    }

    #[test]
    fn json_number_amount_is_read_exactly() {
        let body = GOOD.replace("\"499.00\"", "499.10");
        assert_eq!(
            parse_decide(body.as_bytes()).unwrap().amount.minor(),
            49_910
        );
    }

    fn field_of(body: &str) -> Option<&'static str> {
        parse_decide(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            field_of(&GOOD.replace("\"t1\"", "\"\"")),
            Some("transaction_id")
        );
        assert_eq!(field_of(&GOOD.replace("\"c1\"", "7")), Some("customer_id"));
        assert_eq!(
            field_of(&GOOD.replace("+08:00", "")),
            Some("timestamp"),
            "a timestamp without offset is refused"
        );
        assert_eq!(
            field_of(&GOOD.replace("\"499.00\"", "\"-1\"")),
            Some("amount")
        );
        assert_eq!(
            field_of(&GOOD.replace("\"499.00\"", "\"0\"")),
            Some("amount")
        );
        assert_eq!(
            field_of(&GOOD.replace("\"499.00\"", "\"4.999\"")),
            Some("amount")
        );
        assert_eq!(
            field_of(&GOOD.replace("\"499.00\"", "\"NaN\"")),
            Some("amount")
        );
        assert_eq!(field_of(&GOOD.replace("}", ",\"lat\":10}")), Some("lon"));
        assert_eq!(
            field_of(&GOOD.replace("}", ",\"lat\":91,\"lon\":0}")),
            Some("lat")
        );
        assert_eq!(
            field_of(&GOOD.replace("}", ",\"lat\":1,\"lon\":180.5}")),
            Some("lon")
        );
        assert_eq!(
            field_of(&GOOD.replace("}", ",\"currency\":\"cny\"}")),
            Some("currency")
        );
        assert_eq!(
            field_of(&GOOD.replace("}", ",\"credit_limit\":\"100\"}")),
            Some("credit_granted_at")
        );
        assert_eq!(
            field_of("{\"transaction_id\":\"x\""),
            None,
            "malformed JSON"
        );
        assert_eq!(field_of("[1]"), None);
    }

    #[test]
    fn a_field_given_twice_is_refused() {
        let body = GOOD.replace("}", ",\"amount\":\"1.00\"}");
        let err = parse_decide(body.as_bytes()).unwrap_err();
        assert_eq!(err.field, Some("amount"));
        assert!(err.message.contains("more than once"), "{err}");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = GOOD.replace("\"c1\"", "\"c\\u00e9\\\"1\"");
        assert_eq!(
            parse_decide(body.as_bytes()).unwrap().customer_id,
            "c\u{e9}\"1"
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = GOOD.replace("}", ",\"device\":{\"os\":\"ios\"}}");
        assert!(parse_decide(body.as_bytes()).is_ok());
    }

    #[test]
    fn outcome_status_must_be_known() {
        let err = parse_outcome(br#"{"transaction_id":"t","customer_id":"c","status":"lost"}"#)
            .unwrap_err();
        assert_eq!(err.field, Some("status"));
    }
}
