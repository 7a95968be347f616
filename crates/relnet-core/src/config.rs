//! Typed run configurations: defaults, a TOML file, then command-line flags on top; validated on
//! load; printed resolved at the start of a run and written next to its outputs.
//!
//! Each command defines a struct with `#[serde(default, deny_unknown_fields)]` and implements
//! [`RunConfig`]. An unknown key is an error naming the key (and the file); an out-of-range value
//! is an error naming the key, the value and the allowed range.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An invalid configuration: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub key: Option<String>,
    pub problem: String,
}

impl ConfigError {
    pub fn key(key: &str, problem: impl Into<String>) -> Self {
        ConfigError { file: None, key: Some(key.to_string()), problem: problem.into() }
    }

    fn in_file(mut self, file: Option<&Path>) -> Self {
        if self.file.is_none() {
            self.file = file.map(Path::to_path_buf);
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(key) = &self.key {
            write!(f, "config key `{key}`: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// A command's configuration.
pub trait RunConfig: Serialize + DeserializeOwned + Default {
    /// Checks every value's range; errors name the key.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Checks `lo <= value <= hi` for key `key`.
pub fn check_range<T: PartialOrd + fmt::Display>(key: &str, value: T, lo: T, hi: T) -> Result<(), ConfigError> {
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ConfigError::key(key, format!("value {value} out of range (allowed {lo}..={hi})")))
    }
}

/// The defaults of an options struct, as its clap attributes declare them (`default_value_t`):
/// the one place a default is written.
pub fn clap_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    // Environment variables feed flags, not defaults: a `Default` must not depend on them.
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true)).mut_args(|a| a.env(None::<&str>));
    let matches = cmd.try_get_matches_from(std::iter::empty::<String>()).expect("options without required arguments");
    T::from_arg_matches(&matches).expect("defaults parse")
}

/// The values of `parsed` (an options struct parsed from `matches`) that were given on the
/// command line or in the environment, by config key: the flags laid over a config file. A
/// field's arg id is its name, which is also its config key, so nothing is copied by hand.
pub fn given<T: Serialize>(parsed: &T, matches: &clap::ArgMatches) -> toml::Table {
    use clap::parser::ValueSource;
    let Ok(table) = toml::Table::try_from(parsed) else { return toml::Table::new() };
    table
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                matches.try_contains_id(k).ok().and_then(|_| matches.value_source(k)),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .collect()
}

/// Lays `over` onto `base`: nested tables merge key by key, except a tagged table (`kind = ...`)
/// whose kind changes, which is replaced whole (another method's options do not carry over).
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                let same_kind = match (b.get("kind"), o.get("kind")) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                };
                if same_kind {
                    merge(b, o);
                } else {
                    *b = o;
                }
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Resolves a configuration: the defaults, overridden by `file` (if any), overridden by
/// `overrides` (the flags given on the command line), then validated.
pub fn resolve<C: RunConfig>(file: Option<&Path>, overrides: toml::Table) -> Result<C, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                file: Some(path.to_path_buf()),
                key: None,
                problem: format!("cannot read config file: {e}"),
            })?;
            text.parse::<toml::Table>().map_err(|e| ConfigError {
                file: Some(path.to_path_buf()),
                key: None,
                problem: format!("not valid TOML: {}", e.message()),
            })?
        }
        None => toml::Table::new(),
    };
    // Flags given on the command line are not errors of the file: keep their origin apart.
    let from_flags: Vec<String> = keys_of(&overrides);
    merge(&mut table, overrides);
    // Deserialise from text so that errors carry a span: it locates the key of a bad value.
    let text = toml::to_string(&table).unwrap_or_default();
    let config: C = toml::from_str(&text).map_err(|e| {
        let msg = e.message().trim().to_string();
        // A tagged table (`[method]`, `[evaluator]`) parsed by its registry names its own key.
        let (key, msg) = match split_nested(&msg) {
            Some((key, problem)) => (Some(key), problem),
            // "unknown field `x`" names the key itself; for a bad value (e.g. "unknown variant
            // `v`") the span locates its key.
            None => (
                if msg.starts_with("unknown field") { extract_key(&msg) } else { None }
                    .or_else(|| key_at(&text, e.span())),
                msg,
            ),
        };
        let file = match &key {
            Some(k) if from_flags.contains(k) => None,
            _ => file,
        };
        ConfigError { file: file.map(Path::to_path_buf), key, problem: msg }
    })?;
    config.validate().map_err(|e| {
        let from_flag = e.key.as_ref().is_some_and(|k| from_flags.contains(k));
        e.in_file(if from_flag { None } else { file })
    })?;
    Ok(config)
}

/// The error of parsing `text` (a table serialised by relnet) as an options struct, naming the key.
pub fn error_in(text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().to_string();
    let key =
        if msg.starts_with("unknown field") { extract_key(&msg) } else { None }.or_else(|| key_at(text, e.span()));
    ConfigError { file: None, key, problem: msg }
}

const NESTED: &str = "\u{1}key ";

/// A nested table's error as a serde message that [`resolve`] turns back into a keyed error.
pub fn nested_message(e: &ConfigError) -> String {
    match &e.key {
        Some(k) => format!("{NESTED}{k}\u{1}{}", e.problem),
        None => e.problem.clone(),
    }
}

fn split_nested(msg: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix(NESTED)?;
    let (key, problem) = rest.split_once('\u{1}')?;
    Some((key.to_string(), problem.to_string()))
}

/// Every key of a table, nested ones included.
fn keys_of(t: &toml::Table) -> Vec<String> {
    t.iter()
        .flat_map(|(k, v)| std::iter::once(k.clone()).chain(v.as_table().map(keys_of).unwrap_or_default()))
        .collect()
}

/// Pulls the key name out of serde messages like "unknown field `foo`, expected ...".
fn extract_key(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_string())
}

/// The key of the `key = value` line that a span points into.
fn key_at(text: &str, span: Option<std::ops::Range<usize>>) -> Option<String> {
    let at = span?.start.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split('=').next()?.trim().trim_matches('"');
    (!key.is_empty() && line.contains('=')).then(|| key.to_string())
}

/// The configuration as TOML text (what is printed at the start of a run and saved).
pub fn to_toml<C: Serialize>(config: &C) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot serialise config: {e}\n"))
}

/// Writes the resolved configuration to `path` atomically.
pub fn save<C: Serialize>(config: &C, path: &Path) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, to_toml(config).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        epochs: u32,
        lr: f64,
        name: String,
        method: Kind,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        #[default]
        Slow,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo { epochs: 10, lr: 1e-3, name: "x".into(), method: Kind::Slow }
        }
    }

    impl RunConfig for Demo {
        fn validate(&self) -> Result<(), ConfigError> {
            check_range("epochs", self.epochs, 1, 10_000)?;
            check_range("lr", self.lr, 0.0, 10.0)
        }
    }

    fn flags(pairs: &[(&str, toml::Value)]) -> toml::Table {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn merge_lays_nested_tables_and_replaces_a_table_whose_kind_changes() {
        let table = |t: &str| t.parse::<toml::Table>().unwrap();
        let mut base =
            table("epochs = 3\n[method]\nkind = \"simclr\"\ntemperature = 0.2\nsimclr_loss = \"mean-log\"\n");
        merge(&mut base, table("epochs = 5\n[method]\ntemperature = 0.7\n"));
        assert_eq!(
            base,
            table("epochs = 5\n[method]\nkind = \"simclr\"\ntemperature = 0.7\nsimclr_loss = \"mean-log\"\n")
        );
        merge(&mut base, table("[method]\nkind = \"relational\"\nk = 4\n"));
        assert_eq!(
            base,
            table("epochs = 5\n[method]\nkind = \"relational\"\nk = 4\n"),
            "another kind's options do not carry over"
        );
    }

    #[test]
    fn given_keeps_only_what_the_command_line_set() {
        use clap::{Args, FromArgMatches};
        #[derive(clap::Args, Serialize, Debug)]
        struct Opts {
            #[arg(long, default_value_t = 10)]
            epochs: u32,
            #[arg(long, default_value_t = 0.5)]
            lr: f64,
            #[arg(long)]
            name: Option<String>,
        }
        let cmd = Opts::augment_args(clap::Command::new("t"));
        let m = cmd.try_get_matches_from(["t", "--epochs", "10", "--name", "a"]).unwrap();
        let parsed = Opts::from_arg_matches(&m).unwrap();
        let t = given(&parsed, &m);
        // A flag given at its default value is still given; a default is not.
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t["epochs"], toml::Value::Integer(10));
        assert_eq!(t["name"], toml::Value::String("a".into()));
        let d: Opts = clap_defaults();
        assert_eq!((d.epochs, d.lr, d.name), (10, 0.5, None));
    }

    #[test]
    fn defaults_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "epochs = 20\nname = \"file\"\n").unwrap();
        let c: Demo = resolve(Some(&f), flags(&[("name", "flag".into())])).unwrap();
        assert_eq!(c, Demo { epochs: 20, lr: 1e-3, name: "flag".into(), method: Kind::Slow });
        let d: Demo = resolve(None, toml::Table::new()).unwrap();
        assert_eq!(d, Demo::default());
        // What is saved reads back to the same config.
        let out = dir.path().join("out/config.toml");
        save(&c, &out).unwrap();
        assert_eq!(resolve::<Demo>(Some(&out), toml::Table::new()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_and_ranges_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "epochz = 20\n").unwrap();
        let e = resolve::<Demo>(Some(&f), toml::Table::new()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("epochz"));
        assert!(e.to_string().contains("c.toml") && e.to_string().contains("epochz"), "{e}");

        std::fs::write(&f, "epochs = 0\n").unwrap();
        let e = resolve::<Demo>(Some(&f), toml::Table::new()).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("`epochs`") && e.contains("out of range"), "{e}");

        let e = resolve::<Demo>(None, flags(&[("lr", toml::Value::Float(-1.0))])).unwrap_err().to_string();
        assert!(e.starts_with("config key `lr`"), "{e}");

        std::fs::write(&f, "epochs = \"ten\"\n").unwrap();
        let e = resolve::<Demo>(Some(&f), toml::Table::new()).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("`epochs`") && e.contains("invalid type"), "{e}");

        std::fs::write(&f, "method = \"fast\"\n").unwrap();
        let e = resolve::<Demo>(Some(&f), toml::Table::new()).unwrap_err().to_string();
        assert!(e.contains("`method`") && e.contains("unknown variant `fast`"), "{e}");

        std::fs::write(&f, "epochs = [\n").unwrap();
        let e = resolve::<Demo>(Some(&f), toml::Table::new()).unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }
}
