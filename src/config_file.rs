//! What the daemons' TOML configuration files (`agent.toml`, `coordinator.toml`) share: reading
//! the file, errors that name the file with the line and column (syntax, unknown keys, wrong
//! types) or with the dotted key (values that are not allowed), and the value checks (absolute
//! paths, seconds, percentages).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// Why a configuration file cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read (a missing `--config FILE`, permissions, ...).
    #[error("{}: cannot read the configuration: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("{}{}: {message}", file.display(), pos.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        file: PathBuf,
        /// Line and column, 1-based.
        pos: Option<(usize, usize)>,
        message: String,
    },
    /// A value of the right type that is not allowed.
    #[error("{}: {key}: {message}", file.display())]
    Value {
        file: PathBuf,
        /// The key, dotted: `thresholds.disk_available_percent`.
        key: String,
        message: String,
    },
}

/// The text of the configuration file `path`; `None` when it does not exist and was not asked
/// for explicitly (a missing default file is an empty one, a missing `--config FILE` an
/// error).
pub fn read(path: &Path, explicit: bool) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(source) => Err(FileError::Read {
            file: path.to_path_buf(),
            source,
        }),
    }
}

/// Parse `text`, the content of `file`, into the file's shape `T`. Errors carry the line and
/// column.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| FileError::Syntax {
        file: file.to_path_buf(),
        pos: e.span().map(|s| line_col(text, s.start)),
        message: e.message().trim_end().to_string(),
    })
}

/// The value checks of one file: each error names the file and the dotted key.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    file: &'a Path,
}

impl<'a> Keys<'a> {
    pub fn new(file: &'a Path) -> Keys<'a> {
        Keys { file }
    }

    /// The error "`key`: `message`" in this file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> FileError {
        FileError::Value {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// `p`, which must be absolute.
    pub fn absolute(&self, key: &str, p: PathBuf) -> Result<PathBuf, FileError> {
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(self.error(
                key,
                format!("must be an absolute path, not \"{}\"", p.display()),
            ))
        }
    }

    /// [`Keys::absolute`] for an optional key.
    pub fn absolute_opt(
        &self,
        key: &str,
        p: Option<PathBuf>,
    ) -> Result<Option<PathBuf>, FileError> {
        p.map(|p| self.absolute(key, p)).transpose()
    }

    /// `v`, a percentage from 0 to 100.
    pub fn percent(&self, key: &str, v: f64) -> Result<f64, FileError> {
        if (0.0..=100.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.error(key, format!("must be a percentage from 0 to 100, not {v}")))
        }
    }

    /// `v` seconds, 0 or more.
    pub fn seconds(&self, key: &str, v: f64) -> Result<Duration, FileError> {
        Duration::try_from_secs_f64(v).map_err(|_| {
            self.error(
                key,
                format!("must be a number of seconds, 0 or more, not {v}"),
            )
        })
    }

    /// `v` seconds, more than 0.
    pub fn positive_seconds(&self, key: &str, v: f64) -> Result<Duration, FileError> {
        match self.seconds(key, v)? {
            d if d.is_zero() => Err(self.error(key, "must be more than 0 seconds")),
            d => Ok(d),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Serde: an optional integer or float, as `f64` (`#[serde(default, deserialize_with =
/// "crate::config_file::number")]`).
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
    }
    d.deserialize_any(V).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        #[serde(default, deserialize_with = "number")]
        delay: Option<f64>,
    }

    #[test]
    fn errors_name_the_file_the_position_and_the_key() {
        let file = Path::new("/etc/x.toml");
        let e = parse::<Shape>(file, "delay = 1\n\nother = 2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:3:1: unknown field `other`, expected `delay`"
        );
        let e = parse::<Shape>(file, "delay = \"x\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/x.toml:1:9: invalid type"),
            "{e}"
        );
        assert_eq!(
            parse::<Shape>(file, "delay = 2\n").unwrap().delay,
            Some(2.0)
        );
        assert_eq!(
            parse::<Shape>(file, "delay = 2.5\n").unwrap().delay,
            Some(2.5)
        );
        let keys = Keys::new(file);
        assert_eq!(
            keys.absolute("a.b", "rel".into()).unwrap_err().to_string(),
            "/etc/x.toml: a.b: must be an absolute path, not \"rel\""
        );
        assert!(keys.positive_seconds("t", 0.0).is_err());
        assert!(keys.seconds("t", -1.0).is_err());
        assert!(keys.percent("p", 101.0).is_err());
        assert_eq!(line_col("ab\ncdé\nx", 7), (2, 4));
    }

    #[test]
    fn a_missing_default_file_is_empty_a_missing_given_one_an_error() {
        let p = Path::new("/nonexistent/hostset/x.toml");
        assert!(read(p, false).unwrap().is_none());
        assert!(matches!(read(p, true), Err(FileError::Read { .. })));
    }
}
