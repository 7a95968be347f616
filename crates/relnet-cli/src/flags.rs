//! Command-line flags as a TOML table of overrides: only the flags given, by config key, laid
//! over `--config FILE` by `relnet_core::config::resolve`.

use std::path::PathBuf;

#[derive(Default)]
pub struct Flags(pub toml::Table);

impl Flags {
    pub fn set<T: Into<toml::Value>>(&mut self, key: &str, v: Option<T>) {
        if let Some(v) = v {
            self.0.insert(key.into(), v.into());
        }
    }

    pub fn int(&mut self, key: &str, v: Option<impl TryInto<i64>>) {
        if let Some(v) = v.and_then(|v| v.try_into().ok()) {
            self.0.insert(key.into(), toml::Value::Integer(v));
        }
    }

    pub fn path(&mut self, key: &str, v: Option<PathBuf>) {
        self.set(key, v.map(|p| p.display().to_string()));
    }
}
