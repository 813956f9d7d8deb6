//! Writing an output so that it is either wholly there or not at all: the bytes go to a
//! temporary file beside the destination, are synced to disk, and the file is renamed over the
//! destination (then the directory is synced, so the rename survives a crash too). On any error
//! the temporary file is removed; the destination is untouched.
//!
//! Every file the tool writes (models, weights files, `.npz` outputs) goes through here.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `dest` through `write`, which gets the temporary file and gives it back when done.
/// Refuses to replace an existing file unless `overwrite`.
pub fn write_atomically(
    dest: &Path,
    overwrite: bool,
    write: impl FnOnce(File) -> Result<File>,
) -> Result<()> {
    if dest.exists() && !overwrite {
        return Err(Error::msg("the output file exists (use --force to replace it)").in_file(dest));
    }
    let tmp = temp_path(dest);
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).map_err(|e| {
            Error::with_source("cannot create a temporary file beside the output", e)
        })?;
        let file = write(file)?;
        file.sync_all()
            .map_err(|e| Error::with_source("cannot sync the output", e))?;
        drop(file);
        std::fs::rename(&tmp, dest)
            .map_err(|e| Error::with_source("cannot move the output into place", e))?;
        // The rename is durable once the directory entry is; a failure here leaves the
        // complete file in place, so it is not an error.
        if let Some(dir) = dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| e.in_file(dest))
}

/// `.<name>.tmp-<pid>` beside `dest`: same directory (so the rename is atomic), hidden.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_failed_write_leaves_neither_output_nor_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let err = write_atomically(&dest, false, |mut f| {
            f.write_all(b"half").unwrap();
            Err(Error::msg("boom"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn replaces_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let put = |bytes: &'static [u8], overwrite| {
            write_atomically(&dest, overwrite, |mut f| {
                f.write_all(bytes).unwrap();
                Ok(f)
            })
        };
        put(b"one", false).unwrap();
        assert!(put(b"two", false).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"one");
        put(b"two", true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
