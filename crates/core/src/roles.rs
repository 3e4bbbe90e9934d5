//! Operator roles: what an operator certificate allows.
//!
//! - `viewer` reads: drones, jobs and their output, packs, rules, events,
//!   the audit trail, the hive's status.
//! - `operator` also acts: runs commands and actions, cancels jobs, fires
//!   events, enables and disables rules.
//! - `admin` also changes what the hive is: installs and removes packs,
//!   enrolls and removes drones.
//!
//! Each role includes the ones before it.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a holder of `self` may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected viewer, operator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| UnknownRole(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_ones_before_it() {
        for holder in Role::ALL {
            for needed in Role::ALL {
                assert_eq!(
                    holder.allows(needed),
                    Role::ALL.iter().position(|r| *r == holder)
                        >= Role::ALL.iter().position(|r| *r == needed),
                    "{holder} for {needed}"
                );
            }
        }
    }

    #[test]
    fn roles_read_and_write_as_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".into())));
    }
}
