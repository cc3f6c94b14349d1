//! The one-time setup code. A box leaves the factory with no account and no password: until
//! the first admin exists, the web page asks its first visitor for this code (written on first
//! boot to the SD card's boot partition and to the journal), then creates the organization and
//! its admin. The code lives in `<data dir>/setup-code` (mode 0600) and is deleted once used.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;

const SETUP_FILE: &str = "setup-code";
/// No 0/O or 1/I: the code is read off a screen or a card and typed.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

pub struct SetupCode {
    path: PathBuf,
}

impl SetupCode {
    pub fn new(data_dir: &Path) -> SetupCode {
        SetupCode { path: data_dir.join(SETUP_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The code, made now if there is none yet (the image's first boot usually made it).
    pub fn ensure(&self) -> std::io::Result<String> {
        if let Some(code) = self.read() {
            return Ok(code);
        }
        let mut rng = rand::rng();
        let chars: String = (0..12).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
        let code = format!("{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12]);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&self.path)?;
        file.write_all(format!("{code}\n").as_bytes())?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            super::sync_dir(dir)?;
        }
        Ok(code)
    }

    fn read(&self) -> Option<String> {
        fs::read_to_string(&self.path).ok().map(|text| text.trim().to_owned()).filter(|code| !code.is_empty())
    }

    /// Whether `given` is the code, ignoring case, spaces and dashes; compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let Some(code) = self.read() else { return false };
        let normal = |text: &str| -> Vec<u8> {
            text.bytes().filter(|b| !matches!(b, b'-' | b' ')).map(|b| b.to_ascii_uppercase()).collect()
        };
        let (expected, given) = (normal(&code), normal(given));
        expected.len() == given.len() && expected.iter().zip(&given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The code has served: it must not create a second admin.
    pub fn consume(&self) -> std::io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_matched_loosely_and_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let setup = SetupCode::new(dir.path());
        let code = setup.ensure().unwrap();
        assert_eq!(setup.ensure().unwrap(), code, "an existing code is kept");
        assert_eq!(code.len(), 14);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(setup.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(setup.matches(&code));
        assert!(setup.matches(&code.replace('-', " ").to_lowercase()));
        assert!(!setup.matches(&code[..13]));
        assert!(!setup.matches(""));
        setup.consume().unwrap();
        assert!(!setup.matches(&code), "a used code is gone");
        setup.consume().unwrap();
    }
}
