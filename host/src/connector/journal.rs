//! The input journal: sockets and stdin cannot be read twice, so the host
//! keeps a copy of every byte it reads from them, in the job's checkpoint
//! directory, and replays it after a failure or on `--restore`.
//!
//! The journal is one logical byte stream cut into segment files
//! `journal/seg-OFFSET.log` (OFFSET: the segment's first byte in the
//! stream, 20 digits). Positions in it are the same `offset` the
//! checkpoints record, so replay starts exactly where a checkpoint was
//! taken. Segments wholly before the oldest retained checkpoint are
//! removed. Bytes are written with plain `write` calls, so they survive a
//! crash of the host process; they are fsynced with every checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A new segment starts once the current one reaches this size.
const SEGMENT_BYTES: u64 = 64 << 20;

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let start = name
                .to_str()?
                .strip_prefix("seg-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((start, e.path()))
        })
        .collect();
    segs.sort();
    segs
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("seg-{start:020}.log"))
}

/// Appends to the journal.
pub struct JournalWriter {
    dir: PathBuf,
    file: File,
    start: u64,
    end: u64,
}

impl JournalWriter {
    /// Opens the journal in `dir` for appending at logical offset `end`
    /// (everything from `end` on is cut off first).
    pub fn open(dir: &Path, end: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for (start, path) in segments(dir) {
            if start >= end && start > 0 {
                std::fs::remove_file(path)?;
            }
        }
        let (start, path) = segments(dir)
            .into_iter()
            .rev()
            .find(|(s, _)| *s <= end)
            .unwrap_or((end, segment_path(dir, end)));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.set_len(end - start)?;
        Ok(JournalWriter {
            dir: dir.to_owned(),
            file,
            start,
            end,
        })
    }

    /// Appends bytes.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.end - self.start >= SEGMENT_BYTES {
            self.file.sync_data()?;
            self.start = self.end;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, self.start))?;
        }
        self.file.write_all(bytes)?;
        self.end += bytes.len() as u64;
        Ok(())
    }
}

/// Flushes the journal's newest segment to disk.
pub fn sync(dir: &Path) -> io::Result<()> {
    if let Some((_, path)) = segments(dir).pop() {
        File::open(path)?.sync_data()?;
    }
    Ok(())
}

/// Removes segments that end at or before `offset`.
pub fn trim(dir: &Path, offset: u64) {
    let segs = segments(dir);
    for pair in segs.windows(2) {
        if pair[1].0 <= offset {
            let _ = std::fs::remove_file(&pair[0].1);
        }
    }
}

/// Reads the journal from a logical offset to its end.
pub struct JournalReader {
    segs: Vec<(u64, PathBuf)>,
    next: usize,
    current: Option<File>,
}

impl JournalReader {
    /// Opens the journal in `dir` at `offset`.
    pub fn open(dir: &Path, offset: u64) -> io::Result<Self> {
        let segs = segments(dir);
        let first = segs.iter().rposition(|(s, _)| *s <= offset);
        let Some(first) = first else {
            if offset == 0 {
                return Ok(JournalReader {
                    segs,
                    next: 0,
                    current: None,
                });
            }
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the journal in `{}` does not reach back to byte {offset}",
                    dir.display()
                ),
            ));
        };
        let mut file = File::open(&segs[first].1)?;
        file.seek(SeekFrom::Start(offset - segs[first].0))?;
        Ok(JournalReader {
            segs,
            next: first + 1,
            current: Some(file),
        })
    }
}

impl Read for JournalReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(file) = &mut self.current {
                let n = file.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            let Some((_, path)) = self.segs.get(self.next) else {
                return Ok(0);
            };
            self.current = Some(File::open(path)?);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_rolls_reads_and_trims() {
        let dir = std::env::temp_dir().join(format!("sluice-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = JournalWriter::open(&dir, 0).expect("open");
        w.append(b"hello\n").expect("append");
        w.append(b"world\n").expect("append");
        drop(w);
        let mut s = String::new();
        JournalReader::open(&dir, 6)
            .expect("reader")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "world\n");
        // Reopen at 6: the tail is cut and writing goes on from there.
        let mut w = JournalWriter::open(&dir, 6).expect("reopen");
        w.append(b"again\n").expect("append");
        let mut s = String::new();
        JournalReader::open(&dir, 0)
            .expect("reader")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hello\nagain\n");
        trim(&dir, 12);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
