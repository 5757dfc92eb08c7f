//! One run per export at a time on a host: an exclusive `flock` on a file in
//! the state folder. The kernel drops the lock when its holder dies, so a
//! lock left by a killed run is recovered by the next run automatically; the
//! file records who held it for the message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub struct ExportLock {
    file: File,
}

impl ExportLock {
    /// Takes the lock of `export`, waiting up to `wait` for a running holder.
    pub fn acquire(
        state_dir: &Path,
        host: &str,
        export: &str,
        wait: Duration,
    ) -> Result<ExportLock> {
        let busy = format!("export `{export}` is already running");
        Self::take(state_dir, host, export, wait, &busy)
    }

    /// The lock of one restore destination (`key` names it), waiting up to
    /// `wait` for another restore of it to end.
    pub fn restore(state_dir: &Path, key: &str, what: &str, wait: Duration) -> Result<ExportLock> {
        let busy = format!("another restore of {what} is running");
        Self::take(state_dir, ".restores", key, wait, &busy)
    }

    /// The lock one daemon holds on its policy's host for its whole life.
    pub fn daemon(state_dir: &Path, host: &str) -> Result<ExportLock> {
        let busy = format!("a drp-agent daemon already keeps the schedule of {host}");
        Self::take(state_dir, host, ".daemon", Duration::ZERO, &busy)
    }

    fn take(
        state_dir: &Path,
        host: &str,
        export: &str,
        wait: Duration,
        busy: &str,
    ) -> Result<ExportLock> {
        let dir = state_dir.join(host).join("locks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io_path("cannot create the lock folder", &dir, e))?;
        let path = dir.join(format!("{export}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io_path("cannot open the lock", &path, e))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(Error::Busy(format!(
                        "{busy} ({}); not starting a second one alongside it",
                        holder.trim()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io_path("cannot lock", &path, e));
                }
            }
        }
        // A previous holder killed mid-run left its line here: replace it.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(
            file,
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339()
        );
        Ok(ExportLock { file })
    }
}

impl Drop for ExportLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
