//! Who did something, as the audit trail and job records name them. The
//! type is the core's vocabulary ([`ultron8_core::audit::Actor`]); the hive
//! uses it under this name.

pub use ultron8_core::audit::Actor;
