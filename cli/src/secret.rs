//! The development-mode JWT secret kept under the data folder.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const FILE: &str = "jwt-secret";

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Reads the secret `logi up` generated.
///
/// # Errors
/// When there is none: the message says what to set or run.
pub fn read(data_dir: &Path) -> anyhow::Result<String> {
    let p = path(data_dir);
    match fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) => bail!(
            "{} is empty: delete it and run `logi up`, or set LOGI_JWT_SECRET",
            p.display()
        ),
        Err(_) => bail!(
            "no secret: set LOGI_JWT_SECRET, or run `logi up` once to generate {}",
            p.display()
        ),
    }
}

/// Reads the secret, generating 256 random bits (hex) readable only by this user
/// the first time.
///
/// # Errors
/// When the folder or file cannot be written.
pub fn read_or_create(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(s) = read(data_dir) {
        return Ok(s);
    }
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let p = path(data_dir);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("cannot write {}", p.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_once_then_reused_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(
            read(&data)
                .unwrap_err()
                .to_string()
                .contains("LOGI_JWT_SECRET")
        );
        let first = read_or_create(&data).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(read_or_create(&data).unwrap(), first);
        assert_eq!(read(&data).unwrap(), first);
        let mode = fs::metadata(data.join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
