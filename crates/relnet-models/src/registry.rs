//! Open registries: the process-wide lists of backbones, methods, evaluators and datasets that
//! every part of relnet reads (config parsing, flags and help, the training loop, the grid and its
//! report, the conformance suite). It lives in the lowest crate that registers anything
//! (backbones); `relnet_core::registry` re-exports it.
//!
//! relnet's own entries are there from the start; a crate that depends on relnet adds its own with
//! one call each (`relnet_models::backbone::register`, `relnet_core::methods::register::<MyOptions>()`,
//! and likewise for evaluators and datasets) before it parses a config or builds the command line,
//! and from then on its entry is indistinguishable from a built-in one. `docs/architecture.md` says why this is an explicit
//! call rather than link-time registration (`inventory`, `linkme`).
//!
//! Entries are leaked on registration (`&'static`): a registry only grows, a handful of entries
//! per process, and readers get plain references without holding a lock.

use std::sync::{OnceLock, RwLock};

/// An entry's name, the key it is looked up by.
pub trait Named {
    fn name(&self) -> &str;
}

/// A registration that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another entry of the same kind already has this name.
    #[error("a {kind} named `{name}` is already registered")]
    Duplicate { kind: &'static str, name: String },
    /// The entry's declarations contradict each other (e.g. a K-view method without its K option).
    #[error("{kind} `{name}`: {problem}")]
    Invalid { kind: &'static str, name: String, problem: String },
}

/// A list of entries of one kind, the built-in ones first, in registration order.
pub struct Registry<E: 'static> {
    kind: &'static str,
    builtin: fn() -> Vec<E>,
    entries: OnceLock<RwLock<Vec<&'static E>>>,
}

impl<E: Named + Send + Sync + 'static> Registry<E> {
    /// A registry of `kind` ("method", "evaluator"...) that starts with `builtin()`'s entries.
    pub const fn new(kind: &'static str, builtin: fn() -> Vec<E>) -> Self {
        Registry { kind, builtin, entries: OnceLock::new() }
    }

    fn list(&self) -> &RwLock<Vec<&'static E>> {
        self.entries
            .get_or_init(|| RwLock::new((self.builtin)().into_iter().map(|e| &*Box::leak(Box::new(e))).collect()))
    }

    /// Every entry, in registration order.
    pub fn all(&self) -> Vec<&'static E> {
        self.list().read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&'static E> {
        self.list().read().unwrap_or_else(|p| p.into_inner()).iter().copied().find(|e| e.name() == name)
    }

    /// Every name, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|e| e.name().to_string()).collect()
    }

    /// Adds `entry`; refused when its name is taken.
    pub fn add(&self, entry: E) -> Result<(), RegistryError> {
        let mut list = self.list().write().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|e| e.name() == entry.name()) {
            return Err(RegistryError::Duplicate { kind: self.kind, name: entry.name().to_string() });
        }
        list.push(Box::leak(Box::new(entry)));
        Ok(())
    }

    /// What this registry holds ("method", "evaluator"...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(&'static str);
    impl Named for E {
        fn name(&self) -> &str {
            self.0
        }
    }

    static R: Registry<E> = Registry::new("thing", || vec![E("a"), E("b")]);

    #[test]
    fn builtins_first_then_added_and_duplicates_refused() {
        assert_eq!(R.names(), ["a", "b"]);
        R.add(E("c")).unwrap();
        assert_eq!(R.names(), ["a", "b", "c"]);
        assert_eq!(R.add(E("a")), Err(RegistryError::Duplicate { kind: "thing", name: "a".into() }));
        assert_eq!(R.get("c").map(|e| e.0), Some("c"));
        assert!(R.get("d").is_none());
    }
}
