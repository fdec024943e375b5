//! The one rule table for the workspace: which role may depend on which.
//!
//! Every edge between two workspace crates — a manifest entry or a source-level reference —
//! is judged by [`judge`]. The table is deliberately small enough to read in one go; a new
//! rule is a new [`Rule`] variant and a cell in [`judge`].

use std::fmt;

/// What a crate is for, declared as `[package.metadata.boundaries] role = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The contract (`events`): event types, the envelope, the ports. A leaf.
    Contract,
    /// A bounded context (`records`, `billing`, `notifications`).
    Domain,
    /// Adapters, outbox, queues, workers (`runtime`). Knows no domain.
    Infrastructure,
    /// The binary that wires everything (`app`).
    App,
    /// Integration tests across the whole system (`tests`).
    Tests,
    /// Project automation (`xtask`). Reads files, links no workspace crate.
    Tooling,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Self; 6] = [
        Self::Domain,
        Self::Contract,
        Self::Infrastructure,
        Self::App,
        Self::Tooling,
        Self::Tests,
    ];

    /// Parses the manifest spelling.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contract => "contract",
            Self::Domain => "domain",
            Self::Infrastructure => "infrastructure",
            Self::App => "app",
            Self::Tests => "tests",
            Self::Tooling => "tooling",
        }
    }

    /// Whether SQL in a crate of this role may name any module's tables.
    ///
    /// The app wires trace and admin views and the tests inspect state, so both may read
    /// everything; tooling never runs SQL but holds SQL-looking strings in its own tests.
    /// Contract, domain and infrastructure crates touch only the prefixes they declare.
    #[must_use]
    pub fn reads_any_table(self) -> bool {
        matches!(self, Self::App | Self::Tests | Self::Tooling)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A broken rule, with a stable id that CI output, docs and suppressions can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A domain crate depends on, or imports, another domain crate.
    DomainImportsDomain,
    /// A domain crate depends on a workspace crate other than the contract.
    DomainDependsBeyondContract,
    /// The contract crate depends on a workspace crate.
    ContractDependsOnWorkspace,
    /// An infrastructure crate depends on a domain crate.
    InfrastructureImportsDomain,
    /// A tooling crate depends on a workspace crate.
    ToolingDependsOnWorkspace,
    /// Something depends on a crate nothing may depend on (tests, tooling; app except from tests).
    DependsOnLeafCrate,
    /// A `#[path]` or `include*!` reaches into another crate's folder.
    FileReachesIntoCrate,
    /// SQL names a table another module owns.
    ForeignTable,
}

impl Rule {
    /// Every rule, for `--help` and docs.
    pub const ALL: [Self; 8] = [
        Self::DomainImportsDomain,
        Self::DomainDependsBeyondContract,
        Self::ContractDependsOnWorkspace,
        Self::InfrastructureImportsDomain,
        Self::ToolingDependsOnWorkspace,
        Self::DependsOnLeafCrate,
        Self::FileReachesIntoCrate,
        Self::ForeignTable,
    ];

    /// The stable id printed in every report.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::DomainImportsDomain => "domain-imports-domain",
            Self::DomainDependsBeyondContract => "domain-depends-beyond-contract",
            Self::ContractDependsOnWorkspace => "contract-depends-on-workspace",
            Self::InfrastructureImportsDomain => "infrastructure-imports-domain",
            Self::ToolingDependsOnWorkspace => "tooling-depends-on-workspace",
            Self::DependsOnLeafCrate => "depends-on-leaf-crate",
            Self::FileReachesIntoCrate => "file-reaches-into-crate",
            Self::ForeignTable => "foreign-table",
        }
    }

    /// How to fix it, in one sentence.
    #[must_use]
    pub fn help(self) -> &'static str {
        match self {
            Self::DomainImportsDomain => {
                "depend on `events` only: ask the other module through a query port in `events::queries` (the app wires its implementation) or react to its events"
            }
            Self::DomainDependsBeyondContract => {
                "domains see ports, not implementations: program against the traits in `events` and let `app` wire the adapter"
            }
            Self::ContractDependsOnWorkspace => {
                "`events` is a leaf that every module depends on: move the shared type into `events` itself, or turn the dependency around"
            }
            Self::InfrastructureImportsDomain => {
                "infrastructure knows no domain: declare what it needs as a trait in `events`, implement it in the domain, and wire it in `app`"
            }
            Self::ToolingDependsOnWorkspace => {
                "tooling reads the workspace from its files and `cargo metadata`; it never links a workspace crate"
            }
            Self::DependsOnLeafCrate => {
                "nothing depends on tests or tooling, and only `tests` depends on `app`: move the shared code into a library crate"
            }
            Self::FileReachesIntoCrate => {
                "a crate's files belong to that crate: use what you need through its public API (or the contract), or move the file"
            }
            Self::ForeignTable => {
                "each module owns its tables: ask the owner through a query port in `events::queries`, or keep a copy fed by its events"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The rule table: may a crate of role `from` depend on a crate of role `to`?
///
/// `None` means allowed; `Some(rule)` is the most specific rule the edge breaks.
///
/// | from \ to      | contract | domain | infrastructure | app  | tests | tooling |
/// |----------------|----------|--------|----------------|------|-------|---------|
/// | contract       | ✗        | ✗      | ✗              | ✗    | ✗     | ✗       |
/// | domain         | ✓        | ✗      | ✗              | ✗    | ✗     | ✗       |
/// | infrastructure | ✓        | ✗      | ✓              | ✗    | ✗     | ✗       |
/// | app            | ✓        | ✓      | ✓              | ✗    | ✗     | ✗       |
/// | tests          | ✓        | ✓      | ✓              | ✓    | ✗     | ✗       |
/// | tooling        | ✗        | ✗      | ✗              | ✗    | ✗     | ✗       |
#[must_use]
pub fn judge(from: Role, to: Role) -> Option<Rule> {
    use Role::{App, Contract, Domain, Infrastructure, Tests, Tooling};
    match (from, to) {
        (Contract, _) => Some(Rule::ContractDependsOnWorkspace),
        (Tooling, _) => Some(Rule::ToolingDependsOnWorkspace),
        (Domain, Contract) => None,
        (Domain, Domain) => Some(Rule::DomainImportsDomain),
        (Domain, _) => Some(Rule::DomainDependsBeyondContract),
        (Infrastructure, Domain) => Some(Rule::InfrastructureImportsDomain),
        (Infrastructure | App | Tests, Contract | Infrastructure)
        | (App | Tests, Domain)
        | (Tests, App) => None,
        (Infrastructure | App | Tests, App | Tests | Tooling) => Some(Rule::DependsOnLeafCrate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_app_and_tests_may_depend_on_domains() {
        let allowed: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|from| judge(*from, Role::Domain).is_none())
            .collect();
        assert_eq!(allowed, vec![Role::App, Role::Tests]);
    }

    #[test]
    fn contract_and_tooling_depend_on_nothing() {
        for to in Role::ALL {
            assert_eq!(
                judge(Role::Contract, to),
                Some(Rule::ContractDependsOnWorkspace)
            );
            assert_eq!(
                judge(Role::Tooling, to),
                Some(Rule::ToolingDependsOnWorkspace)
            );
        }
    }

    #[test]
    fn domains_depend_on_the_contract_only() {
        for to in Role::ALL {
            assert_eq!(
                judge(Role::Domain, to).is_none(),
                to == Role::Contract,
                "domain -> {to}"
            );
        }
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("service"), None);
    }
}
