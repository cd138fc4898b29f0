//! CSV records for replay, split as the `csv` crate splits them (its default dialect: comma,
//! double quotes, `\n`, `\r` or `\r\n` ending a record, blank lines skipped, a UTF-8 byte
//! order mark dropped from the header), with the same line numbers, but faster on the lines
//! real exports are made of.
//!
//! A record on one line with no quote (ending at its first `\r` or `\n`) is split on its
//! commas where it lies; every other record (a quoted field, a last line without an ending)
//! goes through `csv_core`, the state machine the `csv` crate runs on every byte. Splitting
//! through the `csv` crate took about 1,480 instructions a row of a card export, on the thread
//! that also decompresses it; this takes about half of that, the commas found eight bytes at a
//! time. A proptest holds the two splitters to the same records and line numbers.
//!
//! This module only cuts records into fields; what the fields mean is [`super::input`]'s.

use std::io::BufRead;
use std::ops::Range;

/// Records split from the input, a batch at a time, in input order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The bytes of the batch's records, until [`Batch::check_text`] finds them text.
    bytes: Vec<u8>,
    /// The same bytes once found to be UTF-8 throughout (`bytes` is then empty): checked once
    /// for the batch, on the thread that splits it, instead of record by record on the thread
    /// that validates the rows, which has the more work of the two.
    text: String,
    /// Each field's bytes in `bytes`, record after record.
    fields: Vec<Range<usize>>,
    /// Each record: its fields in `fields`, its bytes in `bytes`, and its line.
    records: Vec<(Range<usize>, Range<usize>, u64)>,
}

/// One record of a [`Batch`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record<'b> {
    bytes: &'b [u8],
    /// The same bytes as text, when the batch was found to be text.
    text: Option<&'b str>,
    start: usize,
    fields: &'b [Range<usize>],
    /// The line the `csv` crate gives as the record's position: the line after the previous
    /// record's end (blank lines before a record are not counted in).
    pub line: u64,
}

impl Batch {
    /// Records in the batch.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties it, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        if self.bytes.is_empty() {
            self.bytes = std::mem::take(&mut self.text).into_bytes();
        }
        self.bytes.clear();
        self.fields.clear();
        self.records.clear();
    }

    /// Finds whether the records' bytes are all UTF-8, in one pass (a run of ASCII goes a word
    /// at a time), so that each record's text is had without a check of its own
    /// ([`Record::as_str`]). Done once the batch is full: records are only added to bytes.
    pub(crate) fn check_text(&mut self) {
        if !self.text.is_empty() {
            return;
        }
        match String::from_utf8(std::mem::take(&mut self.bytes)) {
            Ok(text) => self.text = text,
            Err(not_text) => self.bytes = not_text.into_bytes(),
        }
    }

    /// The records, in input order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        let (bytes, text) = if self.bytes.is_empty() {
            (self.text.as_bytes(), Some(self.text.as_str()))
        } else {
            (&self.bytes[..], None)
        };
        self.records
            .iter()
            .map(move |(fields, range, line)| Record {
                bytes: &bytes[range.clone()],
                // A record starts and ends at a line's edge: on a character's boundary.
                text: text.and_then(|t| t.get(range.clone())),
                start: range.start,
                fields: &self.fields[fields.clone()],
                line: *line,
            })
    }

    fn push(&mut self, bytes_from: usize, fields_from: usize, line: u64) {
        debug_assert!(self.text.is_empty(), "records added after the check");
        self.records.push((
            fields_from..self.fields.len(),
            bytes_from..self.bytes.len(),
            line,
        ));
    }
}

impl<'b> Record<'b> {
    /// Fields in the record.
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }

    /// The record's bytes: its fields, and maybe what separates them.
    pub(crate) fn as_slice(&self) -> &'b [u8] {
        self.bytes
    }

    /// [`Record::as_slice`] as text, when its batch was found to be text
    /// ([`Batch::check_text`]).
    pub(crate) fn as_str(&self) -> Option<&'b str> {
        self.text
    }

    /// Where field `i` is in [`Record::as_slice`].
    pub(crate) fn range(&self, i: usize) -> Option<Range<usize>> {
        let r = self.fields.get(i)?;
        Some(r.start - self.start..r.end - self.start)
    }

    /// Field `i`'s bytes.
    pub(crate) fn get(&self, i: usize) -> Option<&'b [u8]> {
        self.range(i).map(|r| &self.bytes[r])
    }

    /// Every field's bytes, in order.
    pub(crate) fn fields(self) -> impl Iterator<Item = &'b [u8]> {
        let Record {
            bytes,
            start,
            fields,
            ..
        } = self;
        fields
            .iter()
            .map(move |r| &bytes[r.start - start..r.end - start])
    }
}

/// The bytes of `word` that are `,`, as the top bit of each: a word's commas are found at once,
/// and taken lowest first. Fields are a few bytes long, and `memchr` set up a search for every
/// one of them.
#[inline(always)]
fn comma_bits(word: &[u8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    let bytes: [u8; 8] = word.try_into().expect("a word is eight bytes");
    // Bytes that are `,` become zero, and then the only ones whose top bit stays clear in
    // (low seven bits + 0x7f) | byte: exactly, since no carry crosses a byte.
    let zeroed = u64::from_le_bytes(bytes) ^ (ONES * u64::from(b','));
    !(((zeroed & LOW7) + LOW7) | zeroed | LOW7)
}

/// Pushes the fields of `text`, a record with no quote that starts at `from` in its batch's
/// bytes, cut at its commas.
#[inline(always)]
fn split_fields(text: &[u8], from: usize, fields: &mut Vec<Range<usize>>) {
    let mut start = from;
    let mut field_end = |comma: usize| {
        fields.push(start..comma);
        start = comma + 1;
    };
    let mut words = text.chunks_exact(8);
    let mut word_at = from;
    for word in &mut words {
        let mut commas = comma_bits(word);
        while commas != 0 {
            field_end(word_at + (commas.trailing_zeros() / 8) as usize);
            commas &= commas - 1;
        }
        word_at += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b',' {
            field_end(word_at + i);
        }
    }
    fields.push(start..from + text.len());
}

/// Splits CSV records from a buffered input.
pub(crate) struct Records<R> {
    input: R,
    /// For what the fast path leaves: set to the line count before each use.
    core: csv_core::Reader,
    /// `csv_core`'s line count: 1 plus the `\n` bytes consumed.
    line: u64,
    /// Whether any record was read (the first is where a byte order mark is dropped).
    started: bool,
    /// The input ended (or failed): no record follows.
    ended: bool,
}

impl<R: BufRead> Records<R> {
    /// Records of `input`, from its first (the header, for CSV with one).
    pub(crate) fn new(input: R) -> Records<R> {
        Records {
            input,
            core: csv_core::Reader::new(),
            line: 1,
            started: false,
            ended: false,
        }
    }

    /// Adds the next record to `batch`; returns `false` at the end of the input. An error reading
    /// the input ends it.
    pub(crate) fn read_into(&mut self, batch: &mut Batch) -> std::io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let line = self.line;
        if self.started {
            let input = match self.input.fill_buf() {
                Ok(input) => input,
                Err(e) => {
                    self.ended = true;
                    return Err(e);
                }
            };
            // `csv_core` skips `\r` and `\n` where a record would start, counting the lines.
            let skip = input
                .iter()
                .position(|&b| b != b'\n' && b != b'\r')
                .unwrap_or(input.len());
            let rest = &input[skip..];
            // A whole record on one line, with no quote: split where it lies. It ends at the
            // first `\r` or `\n`, and only that byte is consumed with it, as `csv_core` does
            // (the `\n` of a `\r\n` is skipped where the next record would start).
            if let Some(end) = memchr::memchr2(b'\n', b'\r', rest)
                && memchr::memchr(b'"', &rest[..end]).is_none()
            {
                let newlines = memchr::memchr_iter(b'\n', &input[..skip]).count() as u64
                    + u64::from(rest[end] == b'\n');
                let (bytes_from, fields_from) = (batch.bytes.len(), batch.fields.len());
                let text = &rest[..end];
                batch.bytes.extend_from_slice(text);
                split_fields(text, bytes_from, &mut batch.fields);
                batch.push(bytes_from, fields_from, line);
                self.input.consume(skip + end + 1);
                self.line += newlines;
                return Ok(true);
            }
        }
        self.read_by_core(batch, line)
    }

    /// The next record through `csv_core`, as the `csv` crate reads one.
    fn read_by_core(&mut self, batch: &mut Batch, line: u64) -> std::io::Result<bool> {
        use csv_core::ReadRecordResult;
        self.core.set_line(self.line);
        let (bytes_from, fields_from) = (batch.bytes.len(), batch.fields.len());
        // Field ends as `csv_core` gives them, taken into `batch.fields` after every call.
        let mut ends = [0usize; 64];
        let mut out_len = bytes_from;
        // Room for the record: `csv_core` stops when it runs out, and is given more.
        batch.bytes.resize(out_len + 256, 0);
        let mut field_start = bytes_from;
        loop {
            let input = match self.input.fill_buf() {
                Ok(input) => input,
                Err(e) => {
                    self.ended = true;
                    batch.bytes.truncate(bytes_from);
                    batch.fields.truncate(fields_from);
                    return Err(e);
                }
            };
            let (result, read, written, ended) =
                self.core
                    .read_record(input, &mut batch.bytes[out_len..], &mut ends);
            self.input.consume(read);
            self.started = true;
            out_len += written;
            // Field ends are counted from the record's start.
            for &end in &ends[..ended] {
                batch.fields.push(field_start..bytes_from + end);
                field_start = bytes_from + end;
            }
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let grown = batch.bytes.len() * 2;
                    batch.bytes.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => {
                    self.line = self.core.line();
                    batch.bytes.truncate(out_len);
                    batch.push(bytes_from, fields_from, line);
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.line = self.core.line();
                    self.ended = true;
                    batch.bytes.truncate(bytes_from);
                    batch.fields.truncate(fields_from);
                    return Ok(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Batch, Records};

    /// Each record's fields and line, through [`Records`] reading 7 bytes at a time: records
    /// then cross the reads' ends, and all but the shortest go through `csv_core`.
    fn ours(input: &[u8]) -> Vec<(Vec<Vec<u8>>, u64)> {
        ours_by(input, 7)
    }

    /// [`ours`], reading `capacity` bytes at a time.
    fn ours_by(input: &[u8], capacity: usize) -> Vec<(Vec<Vec<u8>>, u64)> {
        let mut records = Records::new(std::io::BufReader::with_capacity(capacity, input));
        let mut batch = Batch::default();
        while records
            .read_into(&mut batch)
            .expect("no I/O error in memory")
        {}
        batch.check_text();
        batch
            .iter()
            .map(|r| {
                // Text when the batch was found to be, and then the record's own bytes.
                let text = std::str::from_utf8(r.as_slice()).ok();
                assert!(r.as_str().is_none() || r.as_str() == text);
                let fields = r.fields().map(<[u8]>::to_vec).collect();
                (fields, r.line)
            })
            .collect()
    }

    #[test]
    fn a_batch_is_found_text_once_and_refilled_after_it() {
        let mut batch = Batch::default();
        let mut records = Records::new("a,b\nc,d\n".as_bytes());
        while records.read_into(&mut batch).expect("in memory") {}
        batch.check_text();
        // A record's bytes as text, whichever way it was split (`csv_core` drops the commas).
        assert_eq!(batch.len(), 2);
        assert!(
            batch
                .iter()
                .all(|r| r.as_str().map(str::as_bytes) == Some(r.as_slice()))
        );
        batch.clear();
        let mut records = Records::new(&b"e,\xff\ng,h\n"[..]);
        while records.read_into(&mut batch).expect("in memory") {}
        batch.check_text();
        // One record is not text, so none is had as text; each is read as bytes.
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|r| r.as_str().is_none()));
        let fields: Vec<Vec<&[u8]>> = batch.iter().map(|r| r.fields().collect()).collect();
        assert_eq!(fields, [vec![&b"e"[..], b"\xff"], vec![b"g", b"h"]]);
        batch.clear();
        let mut records = Records::new("i,j\n".as_bytes());
        while records.read_into(&mut batch).expect("in memory") {}
        batch.check_text();
        let fields: Vec<Vec<&[u8]>> = batch.iter().map(|r| r.fields().collect()).collect();
        assert_eq!(fields, [vec![&b"i"[..], b"j"]]);
        assert!(batch.iter().all(|r| r.as_str().is_some()));
    }

    /// Each record's fields and line, through the `csv` crate as replay configured it.
    fn theirs(input: &[u8]) -> Vec<(Vec<Vec<u8>>, u64)> {
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(input);
        let mut out = Vec::new();
        let mut record = csv::ByteRecord::new();
        while csv
            .read_byte_record(&mut record)
            .expect("no I/O error in memory")
        {
            let line = record.position().expect("read records have one").line();
            out.push((record.iter().map(<[u8]>::to_vec).collect(), line));
        }
        out
    }

    #[test]
    fn records_and_lines_are_the_csv_crates_on_everyday_input() {
        for input in [
            &b"a,b,c\n1,2,3\n4,5,6\n"[..],
            b"a,b\r\n1,2\r\n\r\n3,4\r\n",
            b"\xef\xbb\xbfa,b\n1,\"x,\ny\"\n\n\n2,3",
            b"a\r1\r2\n\n3",
            b"a,b\n\"\"\"q\"\"\",2\n,\n",
            b"",
            b"\n\n",
        ] {
            assert_eq!(
                ours(input),
                theirs(input),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Records longer, and with more fields, than `csv_core` is given room for at once.
        let wide = vec!["f"; 150].join(",");
        let long = format!(
            "a,\"{}\",b\n{wide}\n\"{wide}\"\n\"q\",{wide}\n",
            "x".repeat(1000)
        );
        let records = ours(long.as_bytes());
        assert_eq!(records, theirs(long.as_bytes()));
        let fields: Vec<usize> = records.iter().map(|(fields, _)| fields.len()).collect();
        assert_eq!(fields, [3, 150, 1, 151]);
    }

    proptest! {
        #[test]
        fn records_and_lines_are_the_csv_crates(
            bytes in proptest::collection::vec(
                prop_oneof![
                    6 => Just(b'a'),
                    3 => Just(b','),
                    2 => Just(b'"'),
                    2 => Just(b'\n'),
                    1 => Just(b'\r'),
                    1 => Just(0xef),
                    1 => Just(0xbb),
                    1 => Just(0xbf),
                ],
                0..120,
            ),
            bom in any::<bool>(),
        ) {
            let mut input = if bom { b"\xef\xbb\xbf".to_vec() } else { Vec::new() };
            input.extend(bytes);
            prop_assert_eq!(ours(&input), theirs(&input));
        }

        /// Long lines without a quote, which are split where they lie, eight bytes at a time:
        /// with bytes a comma is found among (near misses of it, its bits with the top one set
        /// and its neighbours, and any byte but a quote).
        #[test]
        fn unquoted_lines_split_as_the_csv_crate_splits_them(
            bytes in proptest::collection::vec(
                prop_oneof![
                    6 => Just(b'a'),
                    3 => Just(b','),
                    1 => Just(b'\n'),
                    1 => Just(0xac),
                    1 => Just(b'-'),
                    1 => Just(b'+'),
                    1 => any::<u8>().prop_filter("no quote", |&b| b != b'"'),
                ],
                0..200,
            ),
            capacity in prop_oneof![Just(7), Just(64), Just(4096)],
        ) {
            prop_assert_eq!(ours_by(&bytes, capacity), theirs(&bytes));
        }
    }
}
