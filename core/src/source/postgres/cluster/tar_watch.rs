//! Following a base backup's tar stream on its way through, for the few
//! small files drp reads from it (`backup_label`, `backup_manifest`).

use std::collections::BTreeMap;

/// Follows a tar stream block by block and keeps the content of a few
/// small top-level files. It never changes the bytes.
#[derive(Default)]
pub(super) struct TarWatch {
    header: Vec<u8>,
    /// Bytes left in the current entry (data and padding).
    skip: u64,
    /// The entry being kept: its name, its size and what arrived of it.
    keeping: Option<(String, u64, Vec<u8>)>,
    kept: BTreeMap<String, Vec<u8>>,
    ended: bool,
}

/// Files kept, and the most of each kept (a manifest lists every file).
const WATCHED: [&str; 2] = ["backup_label", "backup_manifest"];
const WATCH_LIMIT: u64 = 256 << 20;

impl TarWatch {
    pub(super) fn file(&self, name: &str) -> Option<&[u8]> {
        self.kept.get(name).map(Vec::as_slice)
    }

    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.ended {
            if self.skip > 0 {
                let n = (self.skip as usize).min(bytes.len());
                if let Some((_, size, data)) = &mut self.keeping {
                    let want = (*size as usize).saturating_sub(data.len()).min(n);
                    data.extend_from_slice(&bytes[..want]);
                    if data.len() as u64 == *size {
                        let (name, _, data) = self.keeping.take().expect("kept entry");
                        self.kept.insert(name, data);
                    }
                }
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < 512 {
                continue;
            }
            let header = std::mem::take(&mut self.header);
            if header.iter().all(|&b| b == 0) {
                self.ended = true;
                break;
            }
            let size = octal(&header[124..136]);
            let name = cstr(&header[..100]);
            let name = name.trim_start_matches("./");
            self.skip = size.div_ceil(512) * 512;
            if header[156] != b'L'
                && header[156] != b'x'
                && WATCHED.contains(&name)
                && size <= WATCH_LIMIT
            {
                if size == 0 {
                    self.kept.insert(name.to_string(), Vec::new());
                } else {
                    self.keeping =
                        Some((name.to_string(), size, Vec::with_capacity(size as usize)));
                }
            }
        }
    }
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> u64 {
    // GNU base-256 for sizes over 8 GiB: high bit of the first byte.
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, &b| (n << 8) | b as u64);
    }
    let text = cstr(field);
    u64::from_str_radix(text.trim(), 8).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_keeps_the_label_and_manifest_whatever_the_read_sizes() {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, body) in [
            (
                "backup_label",
                &b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"[..],
            ),
            ("base/1/1259", &vec![7u8; 9000][..]),
            ("backup_manifest", &b"{\"x\": 1}\n"[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        for step in [1, 7, 512, 4096, bytes.len()] {
            let mut w = TarWatch::default();
            for chunk in bytes.chunks(step) {
                w.feed(chunk);
            }
            assert!(w.file("backup_label").unwrap().starts_with(b"START WAL"));
            assert_eq!(w.file("backup_manifest").unwrap(), b"{\"x\": 1}\n");
            assert!(w.file("base/1/1259").is_none());
        }
    }
}
