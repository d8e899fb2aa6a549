//! The hot path of log lines: the compact upload an agent sends to `POST /v1/agent/logs`, and the
//! RFC 3339 timestamps every line carries in JSON and in the store.
//!
//! Why not JSON: at 100k lines/s the agent spent most of its time escaping each message and
//! formatting each timestamp char by char through `chrono`'s `Display`, and the controller as much
//! parsing them back. This framing copies message bytes as they are, sends a timestamp as two
//! integers, and names an instance, source and stream once per run of lines that share them (a
//! batch is mostly one instance's stdout).
//!
//! Batch ([`LOG_BATCH_CONTENT_TYPE`]): the magic [`MAGIC`], then per line
//! - `u8` flags: [`NEW_INSTANCE`], [`NEW_SOURCE`], [`NEW_STREAM`]: which of the three follow (each
//!   `u32` LE length + UTF-8 bytes); an absent one is the previous line's (the first line has all);
//! - `i64` LE seconds and `u32` LE nanoseconds since the Unix epoch (UTC);
//! - `u32` LE length + the message's UTF-8 bytes.
//!
//! All integers little-endian. A batch that ends inside a line, or holds invalid UTF-8, is refused
//! whole: the agent then keeps it and tries again, so a line is never half-accepted.

use crate::agent::AgentLogLine;
use chrono::{DateTime, Datelike, Timelike, Utc};

/// The `Content-Type` of an encoded batch.
pub const LOG_BATCH_CONTENT_TYPE: &str = "application/x-paas-log-batch";
/// The first bytes of every batch (a version: another framing gets another magic).
pub const MAGIC: &[u8; 4] = b"PLB1";
pub const NEW_INSTANCE: u8 = 1;
pub const NEW_SOURCE: u8 = 2;
pub const NEW_STREAM: u8 = 4;

/// Appends `lines`, encoded, to `out`.
pub fn encode_batch(lines: &[AgentLogLine], out: &mut Vec<u8>) {
    out.reserve(MAGIC.len() + lines.iter().map(|l| l.message.len() + 17).sum::<usize>());
    out.extend_from_slice(MAGIC);
    let mut prev: Option<&AgentLogLine> = None;
    for l in lines {
        let mut flags = 0;
        if prev.is_none_or(|p| p.instance_id != l.instance_id) {
            flags |= NEW_INSTANCE;
        }
        if prev.is_none_or(|p| p.source != l.source) {
            flags |= NEW_SOURCE;
        }
        if prev.is_none_or(|p| p.stream != l.stream) {
            flags |= NEW_STREAM;
        }
        out.push(flags);
        if flags & NEW_INSTANCE != 0 {
            put_str(out, &l.instance_id);
        }
        if flags & NEW_SOURCE != 0 {
            put_str(out, &l.source);
        }
        if flags & NEW_STREAM != 0 {
            put_str(out, &l.stream);
        }
        out.extend_from_slice(&l.timestamp.timestamp().to_le_bytes());
        out.extend_from_slice(&l.timestamp.timestamp_subsec_nanos().to_le_bytes());
        put_str(out, &l.message);
        prev = Some(l);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A message longer than 4 GiB cannot reach here: the agent cuts lines far shorter.
    out.extend_from_slice(&(s.len().min(u32::MAX as usize) as u32).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..s.len().min(u32::MAX as usize)]);
}

/// One decoded line, borrowing from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLineRef<'a> {
    pub instance_id: &'a str,
    pub timestamp: DateTime<Utc>,
    pub source: &'a str,
    pub stream: &'a str,
    pub message: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid log batch: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a whole batch (all or nothing).
pub fn decode_batch(buf: &[u8]) -> Result<Vec<LogLineRef<'_>>, DecodeError> {
    let mut r = Reader { buf, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(DecodeError("unknown format"));
    }
    let mut out = Vec::new();
    let (mut instance_id, mut source, mut stream) = (None, None, None);
    while r.at < buf.len() {
        let flags = r.take(1)?[0];
        if flags & NEW_INSTANCE != 0 {
            instance_id = Some(r.str()?);
        }
        if flags & NEW_SOURCE != 0 {
            source = Some(r.str()?);
        }
        if flags & NEW_STREAM != 0 {
            stream = Some(r.str()?);
        }
        let secs = i64::from_le_bytes(r.array()?);
        let nanos = u32::from_le_bytes(r.array()?);
        let timestamp =
            DateTime::from_timestamp(secs, nanos).ok_or(DecodeError("timestamp out of range"))?;
        let message = r.str()?;
        let (Some(instance_id), Some(source), Some(stream)) = (instance_id, source, stream) else {
            return Err(DecodeError("a line without instance, source or stream"));
        };
        out.push(LogLineRef {
            instance_id,
            timestamp,
            source,
            stream,
            message,
        });
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError("truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("not UTF-8"))
    }
}

/// `t` as RFC 3339 the way `chrono` writes it with `SecondsFormat::AutoSi` (no fraction, or 3, 6
/// or 9 digits), ending in `Z` or, with `use_z` false, `+00:00`; written digit by digit into a
/// stack buffer, several times faster than chrono's formatter. Years outside 0..=9999 and leap
/// seconds go through chrono.
pub fn format_rfc3339<'b>(t: &DateTime<Utc>, use_z: bool, buf: &'b mut [u8; 40]) -> &'b str {
    let d = t.date_naive();
    let time = t.time();
    let year = d.year();
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        let s = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, use_z);
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        return std::str::from_utf8(&buf[..n]).unwrap_or("");
    }
    fn digits(buf: &mut [u8], mut v: u32) {
        for b in buf.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    digits(&mut buf[0..4], year as u32);
    buf[4] = b'-';
    digits(&mut buf[5..7], d.month());
    buf[7] = b'-';
    digits(&mut buf[8..10], d.day());
    buf[10] = b'T';
    digits(&mut buf[11..13], time.hour());
    buf[13] = b':';
    digits(&mut buf[14..16], time.minute());
    buf[16] = b':';
    digits(&mut buf[17..19], time.second());
    let mut n = 19;
    if nanos != 0 {
        let (value, width) = if nanos.is_multiple_of(1_000_000) {
            (nanos / 1_000_000, 3)
        } else if nanos.is_multiple_of(1_000) {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        buf[n] = b'.';
        digits(&mut buf[n + 1..n + 1 + width], value);
        n += 1 + width;
    }
    let suffix: &[u8] = if use_z { b"Z" } else { b"+00:00" };
    buf[n..n + suffix.len()].copy_from_slice(suffix);
    n += suffix.len();
    // Only ASCII was written.
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// Serialises a timestamp as chrono's serde does (RFC 3339, `Z`), through [`format_rfc3339`].
pub fn serialize_timestamp<S: serde::Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut buf = [0; 40];
    s.serialize_str(format_rfc3339(t, true, &mut buf))
}

/// Parses the engine's `2026-11-26T10:00:00.123456789Z` (any fraction of 0 to 9 digits, `Z`)
/// without chrono's general parser; anything else goes through `DateTime::parse_from_rfc3339`.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    fast_parse(s.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

fn fast_parse(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = num(&b[0..4])? as i32;
    let (month, day) = (num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let rest = &b[19..b.len() - 1];
    let nanos = match rest {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            num(frac)? * 10u32.pow(9 - frac.len() as u32)
        }
        _ => return None,
    };
    if second > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    fn line(instance: &str, source: &str, stream: &str, msg: &str, nanos: u32) -> AgentLogLine {
        AgentLogLine {
            instance_id: instance.into(),
            timestamp: DateTime::from_timestamp(1_795_000_000, nanos).unwrap(),
            source: source.into(),
            stream: stream.into(),
            message: msg.into(),
        }
    }

    #[test]
    fn a_batch_round_trips_with_shared_fields_sent_once() {
        let lines = vec![
            line("i1", "APP/web/0", "stdout", "hello \"x\"\n\\ ünï", 1),
            line("i1", "APP/web/0", "stdout", "", 999_999_999),
            line("i1", "APP/web/0", "stderr", "err", 0),
            line("i2", "APP/web/1", "stderr", "other", 5),
            line("i2", "CELL", "out", "crashed", 6),
        ];
        let mut buf = Vec::new();
        encode_batch(&lines, &mut buf);
        let got = decode_batch(&buf).unwrap();
        assert_eq!(got.len(), lines.len());
        for (g, l) in got.iter().zip(&lines) {
            assert_eq!(g.instance_id, l.instance_id);
            assert_eq!(g.timestamp, l.timestamp);
            assert_eq!(g.source, l.source);
            assert_eq!(g.stream, l.stream);
            assert_eq!(g.message, l.message);
        }
        // The second line repeats all three shared fields: only its flags byte names them.
        let one = {
            let mut b = Vec::new();
            encode_batch(&lines[..1], &mut b);
            b.len()
        };
        let two = {
            let mut b = Vec::new();
            encode_batch(&lines[..2], &mut b);
            b.len()
        };
        assert_eq!(two - one, 1 + 12 + 4);
    }

    #[test]
    fn a_damaged_batch_is_refused_whole() {
        let mut buf = Vec::new();
        encode_batch(&[line("i", "APP/web/0", "stdout", "abc", 1)], &mut buf);
        for cut in 0..buf.len() {
            if cut == MAGIC.len() {
                // The magic alone is an empty batch.
                assert_eq!(decode_batch(&buf[..cut]).unwrap(), vec![]);
                continue;
            }
            assert!(decode_batch(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert_eq!(decode_batch(&bad), Err(DecodeError("not UTF-8")));
        assert!(decode_batch(b"{\"lines\":[]}").is_err());
        // A first line that names no instance.
        let mut b = MAGIC.to_vec();
        b.push(0);
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode_batch(&b).is_err());
    }

    #[test]
    fn timestamps_format_as_chrono_does() {
        let mut buf = [0; 40];
        for (secs, nanos) in [
            (0, 0),
            (1_795_000_000, 0),
            (1_795_000_000, 123_000_000),
            (1_795_000_000, 123_456_000),
            (1_795_000_000, 123_456_789),
            (1_795_000_000, 1),
            (951_782_400, 500), // 2000-02-29
            (253_402_300_799, 999_999_999),
            (-62_135_596_800, 7), // year 1
            (-62_198_755_200, 0), // year -1: chrono's path
        ] {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            for z in [true, false] {
                assert_eq!(
                    format_rfc3339(&t, z, &mut buf),
                    t.to_rfc3339_opts(SecondsFormat::AutoSi, z)
                );
            }
            let json = serde_json::to_string(&t).unwrap();
            let mut ser = serde_json::Serializer::new(Vec::new());
            serialize_timestamp(&t, &mut ser).unwrap();
            assert_eq!(String::from_utf8(ser.into_inner()).unwrap(), json);
        }
    }

    #[test]
    fn engine_timestamps_parse_as_chrono_parses_them() {
        for s in [
            "2026-11-26T10:00:00.123456789Z",
            "2026-11-26T10:00:00.1Z",
            "2026-11-26T10:00:00Z",
            "2026-11-26T23:59:59.000000001Z",
            "2024-02-29T00:00:00.5Z",
            "2026-11-26T10:00:00.123+02:00",
            "2026-11-26t10:00:00Z",
        ] {
            let want = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            assert_eq!(parse_rfc3339(s), Some(want), "{s}");
        }
        for s in [
            "",
            "2026-11-26",
            "2026-13-26T10:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-26T10:00:00.Z",
            "2026-11-26T10:00:00.1234567890Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T10:00:00",
        ] {
            assert_eq!(
                parse_rfc3339(s),
                DateTime::parse_from_rfc3339(s)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
                "{s}"
            );
        }
    }
}
