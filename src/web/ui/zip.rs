//! A minimal ZIP writer for the log download: entries are stored (no
//! compression), names are UTF-8 (general purpose flag bit 11), no ZIP64.
//!
//! Layout: for each file a local header and its bytes, then the central
//! directory (one record per file), then the end-of-central-directory record.

use super::civil;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// 2.0: the usual "version needed" for stored entries with directories.
const VERSION_NEEDED: u16 = 20;
/// Made by Unix (high byte 3), spec 2.0, so the external attributes below
/// are read as a Unix mode.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// Names and comments are UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
const METHOD_STORED: u16 = 0;
/// A regular file, mode 0644, in the high 16 bits.
const EXTERNAL_ATTRIBUTES: u32 = 0o100_644 << 16;
const LOCAL_HEADER_LEN: u64 = 30;
const CENTRAL_HEADER_LEN: u64 = 46;
const END_LEN: u64 = 22;

/// MS-DOS (time, date) of a Unix time, in UTC. DOS dates cover 1980 to
/// 2107 with 2-second resolution; earlier times give 1980-01-01 00:00:00 and
/// later ones 2107-12-31 23:59:58.
pub fn dos_time(unix_secs: u64) -> (u16, u16) {
    let c = civil(unix_secs);
    if c.year < 1980 {
        return (0, (1 << 5) | 1);
    }
    if c.year > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    // All fields are in range for their bit widths here.
    let time = (c.hour << 11) | (c.minute << 5) | (c.second / 2);
    let date = ((c.year - 1980) as u32) << 9 | (c.month << 5) | c.day;
    (time as u16, date as u16)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// One accepted entry, as the central directory needs it.
struct Entry<'a> {
    name: &'a [u8],
    name_len: u16,
    crc: u32,
    size: u32,
    offset: u32,
}

/// A ZIP of `files` (name, contents), all stamped 1980-01-01 00:00:00.
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    zip_at(files, 0)
}

/// A ZIP of `files` (name, contents), all stamped with `unix_secs` (UTC).
///
/// Without ZIP64 an archive holds at most 65 535 entries and 4 GiB; a file
/// that would not fit (or whose name is over 65 535 bytes) is left out
/// rather than making the archive unreadable.
pub fn zip_at(files: &[(&str, &[u8])], unix_secs: u64) -> Vec<u8> {
    let (time, date) = dos_time(unix_secs);
    let total: usize = files
        .iter()
        .map(|(n, d)| 30 + 46 + 2 * n.len() + d.len())
        .sum();
    let mut out = Vec::with_capacity(total.saturating_add(END_LEN as usize));
    let mut entries: Vec<Entry> = Vec::with_capacity(files.len());
    // Bytes the archive will have once the central directory and end
    // record are written: must stay below 4 GiB.
    let mut projected = END_LEN;
    for (name, data) in files {
        let (Ok(name_len), Ok(size), Ok(offset)) = (
            u16::try_from(name.len()),
            u32::try_from(data.len()),
            u32::try_from(out.len()),
        ) else {
            continue;
        };
        let grows =
            LOCAL_HEADER_LEN + CENTRAL_HEADER_LEN + 2 * u64::from(name_len) + u64::from(size);
        if entries.len() >= usize::from(u16::MAX) || projected + grows >= u64::from(u32::MAX) {
            continue;
        }
        projected += grows;
        let crc = crc32fast::hash(data);
        put32(&mut out, LOCAL_HEADER);
        put16(&mut out, VERSION_NEEDED);
        put16(&mut out, FLAG_UTF8);
        put16(&mut out, METHOD_STORED);
        put16(&mut out, time);
        put16(&mut out, date);
        put32(&mut out, crc);
        put32(&mut out, size); // compressed
        put32(&mut out, size); // uncompressed
        put16(&mut out, name_len);
        put16(&mut out, 0); // extra field length
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        entries.push(Entry {
            name: name.as_bytes(),
            name_len,
            crc,
            size,
            offset,
        });
    }
    // Both fit: `projected` kept the whole archive below 4 GiB and the
    // entry count below 65 535.
    let directory_start = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let count = u16::try_from(entries.len()).unwrap_or(u16::MAX);
    for e in &entries {
        put32(&mut out, CENTRAL_HEADER);
        put16(&mut out, VERSION_MADE_BY);
        put16(&mut out, VERSION_NEEDED);
        put16(&mut out, FLAG_UTF8);
        put16(&mut out, METHOD_STORED);
        put16(&mut out, time);
        put16(&mut out, date);
        put32(&mut out, e.crc);
        put32(&mut out, e.size);
        put32(&mut out, e.size);
        put16(&mut out, e.name_len);
        put16(&mut out, 0); // extra field length
        put16(&mut out, 0); // comment length
        put16(&mut out, 0); // disk number
        put16(&mut out, 0); // internal attributes
        put32(&mut out, EXTERNAL_ATTRIBUTES);
        put32(&mut out, e.offset);
        out.extend_from_slice(e.name);
    }
    let directory_len = u32::try_from(out.len())
        .unwrap_or(u32::MAX)
        .saturating_sub(directory_start);
    put32(&mut out, END_OF_CENTRAL_DIRECTORY);
    put16(&mut out, 0); // this disk
    put16(&mut out, 0); // disk with the central directory
    put16(&mut out, count); // entries on this disk
    put16(&mut out, count); // entries in all
    put32(&mut out, directory_len);
    put32(&mut out, directory_start);
    put16(&mut out, 0); // comment length
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    const LISTING: &str = r#"
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(z.testzip())
print(z.namelist())
for i in z.infolist():
    print(i.filename, i.date_time, i.flag_bits, i.compress_type, i.external_attr >> 16, z.read(i).hex())
"#;

    /// Python's listing of `bytes`, or `None` when there is no python3.
    fn python_reads(bytes: &[u8], tag: &str) -> Option<String> {
        let path = std::env::temp_dir().join(format!("hamon-zip-{tag}-{}.zip", std::process::id()));
        std::fs::write(&path, bytes).expect("write zip");
        let out = Command::new("python3")
            .arg("-c")
            .arg(LISTING)
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("python3 not found: skipping the zipfile check");
                None
            }
            Err(e) => panic!("python3: {e}"),
            Ok(o) => {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                Some(String::from_utf8(o.stdout).expect("utf-8"))
            }
        }
    }

    #[test]
    fn python_zipfile_reads_the_exact_contents() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let files: [(&str, &[u8]); 4] = [
            ("hamon.log", b"line one\nline two\n"),
            ("empty.txt", b""),
            ("logs/journal-\u{fc}.jsonl", &big),
            ("status.json", b"{\"state\":\"Primary Active\"}"),
        ];
        // 2024-02-29 13:45:31 UTC: DOS keeps even seconds.
        let bytes = zip_at(&files, 1_709_214_331);
        let Some(listing) = python_reads(&bytes, "exact") else {
            return;
        };
        let mut want = String::from("None\n");
        want.push_str("['hamon.log', 'empty.txt', 'logs/journal-\u{fc}.jsonl', 'status.json']\n");
        for (name, data) in files {
            want.push_str(&format!(
                "{name} (2024, 2, 29, 13, 45, 30) 2048 0 33188 {}\n",
                super::super::hex(data)
            ));
        }
        assert_eq!(listing, want);
    }

    #[test]
    fn python_zipfile_reads_an_empty_archive() {
        let bytes = zip(&[]);
        assert_eq!(bytes.len(), 22);
        if let Some(listing) = python_reads(&bytes, "empty") {
            assert_eq!(listing, "None\n[]\n");
        }
    }

    #[test]
    fn records_are_laid_out_as_specified() {
        let files: [(&str, &[u8]); 2] = [("a.txt", b"hello"), ("b/c.txt", b"world!")];
        let b = zip(&files);
        // Local header of the first file.
        assert_eq!(u32_at(&b, 0), LOCAL_HEADER);
        assert_eq!(u16_at(&b, 6), FLAG_UTF8);
        assert_eq!(u16_at(&b, 8), METHOD_STORED);
        assert_eq!(
            (u16_at(&b, 10), u16_at(&b, 12)),
            (0, 0x21),
            "1980-01-01 00:00"
        );
        assert_eq!(u32_at(&b, 14), crc32fast::hash(b"hello"));
        assert_eq!(u32_at(&b, 18), 5);
        assert_eq!(u32_at(&b, 22), 5);
        assert_eq!(u16_at(&b, 26), 5);
        assert_eq!(&b[30..35], b"a.txt");
        assert_eq!(&b[35..40], b"hello");
        // The second local header follows directly.
        assert_eq!(u32_at(&b, 40), LOCAL_HEADER);
        // End record.
        let end = b.len() - 22;
        assert_eq!(u32_at(&b, end), END_OF_CENTRAL_DIRECTORY);
        assert_eq!(u16_at(&b, end + 8), 2);
        assert_eq!(u16_at(&b, end + 10), 2);
        let (cd_len, cd_start) = (u32_at(&b, end + 12) as usize, u32_at(&b, end + 16) as usize);
        assert_eq!(cd_start + cd_len, end);
        assert_eq!(cd_len, 2 * 46 + 5 + 7);
        // Central records point at their local headers.
        assert_eq!(u32_at(&b, cd_start), CENTRAL_HEADER);
        assert_eq!(u32_at(&b, cd_start + 42), 0);
        let second = cd_start + 46 + 5;
        assert_eq!(u32_at(&b, second), CENTRAL_HEADER);
        assert_eq!(u32_at(&b, second + 42), 40);
        assert_eq!(u32_at(&b, second + 16), crc32fast::hash(b"world!"));
        assert_eq!(&b[second + 46..second + 53], b"b/c.txt");
    }

    #[test]
    fn names_too_long_for_zip_are_left_out() {
        let long = "x".repeat(70_000);
        let files: [(&str, &[u8]); 2] = [(&long, b"dropped"), ("kept.txt", b"kept")];
        let b = zip(&files);
        let end = b.len() - 22;
        assert_eq!(u16_at(&b, end + 10), 1);
        assert_eq!(&b[30..38], b"kept.txt");
        if let Some(listing) = python_reads(&b, "long") {
            assert!(listing.starts_with("None\n['kept.txt']\n"), "{listing}");
        }
    }

    #[test]
    fn dos_times() {
        assert_eq!(dos_time(0), (0, 0x21), "before 1980: the DOS epoch");
        assert_eq!(dos_time(315_532_800), (0, 0x21), "1980-01-01 00:00:00");
        // 2000-02-29 00:00:00
        assert_eq!(dos_time(951_782_400), (0, (20 << 9) | (2 << 5) | 29));
        // 2027-01-15 08:00:00
        assert_eq!(
            dos_time(1_800_000_000),
            (8 << 11, (47 << 9) | (1 << 5) | 15)
        );
        // 2024-02-29 13:45:31 -> 13:45:30
        assert_eq!(
            dos_time(1_709_214_331),
            ((13 << 11) | (45 << 5) | 15, (44 << 9) | (2 << 5) | 29)
        );
        // Past 2107: the last representable moment.
        assert_eq!(
            dos_time(u64::from(u32::MAX) * 2),
            ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31)
        );
    }
}
