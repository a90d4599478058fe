//! Reading a manifest file safely: bounded in size, never blocking on a named pipe that nobody
//! writes to, and saying in one line why a path cannot be read.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Largest manifest ork reads. The largest real manifests (100,000 tasks) are about 15 MB; a
/// bound keeps `/dev/zero`, a runaway generator or a 6 GB file from exhausting memory.
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;

/// `MAX_FILE_BYTES` as people read it, for messages and docs.
pub const MAX_FILE_SIZE_TEXT: &str = "32 MiB";

/// Why a manifest file could not be read, one line each.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: no such file")]
    NotFound { path: String },
    #[error("cannot read {path}: permission denied")]
    PermissionDenied { path: String },
    #[error("cannot read {path}: it is a directory, not a file")]
    Directory { path: String },
    #[error("{path} is larger than {MAX_FILE_SIZE_TEXT}, the largest manifest ork reads")]
    TooLarge { path: String },
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { path: String, offset: usize },
    #[error("cannot read {path}: {message}")]
    Other { path: String, message: String },
}

/// The whole text of `path`, at most [`MAX_FILE_BYTES`].
///
/// The file is opened non-blocking, so a named pipe with no writer does not hang the open;
/// blocking is then switched back on, so a pipe that has a writer (`ork run <(generate)`) is
/// read to its end as usual, and one without a writer reads as empty at once.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let shown = path.display().to_string();
    let io_error = |e: std::io::Error| match e.kind() {
        ErrorKind::NotFound => ReadError::NotFound {
            path: shown.clone(),
        },
        ErrorKind::PermissionDenied => ReadError::PermissionDenied {
            path: shown.clone(),
        },
        ErrorKind::IsADirectory => ReadError::Directory {
            path: shown.clone(),
        },
        _ => ReadError::Other {
            path: shown.clone(),
            message: plain_io_message(&e),
        },
    };
    let file = File::options()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    let kind = metadata.file_type();
    if kind.is_dir() {
        return Err(ReadError::Directory { path: shown });
    }
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| io_error(std::io::Error::from(e)))?;
    // A regular file says its size up front: refuse a huge one without reading it.
    let known_len = kind.is_file().then_some(metadata.len());
    if known_len.is_some_and(|len| len > MAX_FILE_BYTES as u64) {
        return Err(ReadError::TooLarge { path: shown });
    }
    let capacity = known_len.map_or(64 * 1024, |len| len as usize + 1);
    let mut bytes = Vec::with_capacity(capacity);
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge { path: shown });
    }
    // Only devices and pipes get here without a known size: say so when they gave nothing.
    if bytes.is_empty() && (kind.is_fifo() || kind.is_char_device() || kind.is_socket()) {
        return Err(ReadError::Other {
            path: shown,
            message: "nothing to read (a pipe or device that gave no data)".into(),
        });
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        path: shown,
        offset: e.utf8_error().valid_up_to(),
    })
}

/// `Permission denied (os error 13)` without the part only a programmer needs.
fn plain_io_message(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_lowercase(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    fn message(path: &Path) -> String {
        match read_text(path) {
            Ok(text) => panic!("read {} bytes from {}", text.len(), path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        assert_eq!(read_text(&path).unwrap(), "a: 1\n");
    }

    #[test]
    fn says_why_a_path_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        assert_eq!(
            message(&missing),
            format!("cannot read {}: no such file", missing.display())
        );
        assert_eq!(
            message(dir.path()),
            format!(
                "cannot read {}: it is a directory, not a file",
                dir.path().display()
            )
        );
        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"a: \xff\xfe\n").unwrap();
        assert_eq!(
            message(&binary),
            format!(
                "{} is not UTF-8 text (invalid byte at offset 3)",
                binary.display()
            )
        );
        let big = dir.path().join("big");
        let file = File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES as u64 + 1).unwrap();
        assert_eq!(
            message(&big),
            format!(
                "{} is larger than 32 MiB, the largest manifest ork reads",
                big.display()
            )
        );
        // Root reads anything: only check the message where the permission applies.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a: 1\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&secret).is_err() {
            assert_eq!(
                message(&secret),
                format!("cannot read {}: permission denied", secret.display())
            );
        }
    }

    #[test]
    fn an_endless_device_is_cut_at_the_limit() {
        let started = Instant::now();
        assert_eq!(
            message(Path::new("/dev/zero")),
            "/dev/zero is larger than 32 MiB, the largest manifest ork reads"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_named_pipe_without_writer_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = Instant::now();
        assert_eq!(
            message(&fifo),
            format!(
                "cannot read {}: nothing to read (a pipe or device that gave no data)",
                fifo.display()
            )
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_named_pipe_with_a_writer_is_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                // Opening for writing waits for a reader; then write slowly, in two parts. A
                // reader that looked before this writer was there has read nothing and gone
                // (the writes fail with a broken pipe): write again for the next one.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let mut pipe = File::options().write(true).open(&fifo).unwrap();
                    let written = pipe.write_all(b"a: 1\n").and_then(|()| {
                        std::thread::sleep(Duration::from_millis(50));
                        pipe.write_all(b"b: 2\n")
                    });
                    match written {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            assert!(Instant::now() < deadline, "no reader stayed");
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        };
        // The writer may not have opened yet: a reader that finds no writer reads nothing, so
        // retry until the writer is there (it blocks in open until a reader comes).
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            match read_text(&fifo) {
                Ok(text) => break text,
                Err(_) if Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        writer.join().unwrap();
        assert_eq!(text, "a: 1\nb: 2\n");
    }
}
