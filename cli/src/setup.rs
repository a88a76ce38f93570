//! `pgbroker setup` and `pgbroker migrate`: install or upgrade the schema.

use crate::connection;
use crate::failure::Failure;

/// Installs the schema; prints the version.
pub fn setup(url: &str, json: bool) -> Result<(), Failure> {
    apply(url, json)
}

/// Upgrades the schema; prints the version before and after.
pub fn migrate(url: &str, json: bool) -> Result<(), Failure> {
    apply(url, json)
}

// Both commands run the same idempotent install (it is also the upgrade path); they differ
// only in the name people look for.
fn apply(url: &str, json: bool) -> Result<(), Failure> {
    let broker = connection::broker(url)?;
    let before = broker.schema_version()?;
    let after = broker.install()?;
    let line = if json {
        serde_json::json!({ "previous": before, "version": after }).to_string()
    } else {
        describe(before, after)
    };
    Ok(crate::output::print_lines([line])?)
}

fn describe(before: Option<i32>, after: i32) -> String {
    match before {
        None => format!("installed pgbroker schema version {after}"),
        Some(b) if b == after => format!("pgbroker schema version {after} is up to date"),
        Some(b) => format!("upgraded pgbroker schema from version {b} to version {after}"),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn says_what_changed() {
        assert_eq!(describe(None, 1), "installed pgbroker schema version 1");
        assert_eq!(
            describe(Some(1), 1),
            "pgbroker schema version 1 is up to date"
        );
        assert_eq!(
            describe(Some(1), 2),
            "upgraded pgbroker schema from version 1 to version 2"
        );
    }
}
