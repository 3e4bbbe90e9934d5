//! Where ultronctl finds the hive and its credentials.
//!
//! The file comes from `--config`, else `ULTRONCTL_CONFIG`, else
//! `<user config dir>/ultron8/ultronctl.toml` (on Linux
//! `~/.config/ultron8/ultronctl.toml`). `ULTRONCTL_HIVE`,
//! `ULTRONCTL_SERVER_NAME`, `ULTRONCTL_CA`, `ULTRONCTL_CERT` and
//! `ULTRONCTL_KEY` override single settings. Relative paths in the file are
//! relative to the file's directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfig {
    /// The hive's gRPC address, `host:port`.
    pub hive: String,
    /// Name the hive's certificate is checked against [default: host of `hive`].
    #[serde(default)]
    pub server_name: Option<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads variables through a function so tests need not touch the
/// process environment.
pub fn resolve(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(CtlConfig, PathBuf)> {
    let path = match (flag, env("ULTRONCTL_CONFIG")) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => {
            default_path().context("cannot find the user's config directory; pass --config")?
        }
    };
    if !path.exists() {
        bail!(
            "no ultronctl configuration at {}.\n\
             `ultron8-hive init` writes one into the hive's data directory (ultronctl.toml): \
             pass it with --config, set ULTRONCTL_CONFIG, or copy it to {}",
            path.display(),
            default_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "~/.config/ultron8/ultronctl.toml".into())
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut config: CtlConfig = toml::from_str(&text)
        .with_context(|| format!("invalid ultronctl configuration {}", path.display()))?;
    if let Some(hive) = env("ULTRONCTL_HIVE") {
        config.hive = hive;
    }
    if let Some(name) = env("ULTRONCTL_SERVER_NAME") {
        config.server_name = Some(name);
    }
    for (var, field) in [
        ("ULTRONCTL_CA", &mut config.ca),
        ("ULTRONCTL_CERT", &mut config.cert),
        ("ULTRONCTL_KEY", &mut config.key),
    ] {
        if let Some(value) = env(var) {
            *field = PathBuf::from(value);
        }
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for field in [&mut config.ca, &mut config.cert, &mut config.key] {
        if field.is_relative() {
            *field = base.join(&*field);
        }
    }
    Ok((config, path))
}

pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("ultron8").join("ultronctl.toml"))
}

impl CtlConfig {
    pub fn server_name(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| match self.hive.rsplit_once(':') {
                Some((host, _)) => host.trim_matches(['[', ']']).to_string(),
                None => self.hive.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn write_config(dir: &Path) -> PathBuf {
        let path = dir.join("ultronctl.toml");
        std::fs::write(&path, "hive = \"127.0.0.1:7443\"\nca = \"ca.pem\"\ncert = \"/abs/admin.pem\"\nkey = \"admin-key.pem\"\n")
            .expect("write");
        path
    }

    #[test]
    fn flag_beats_variable_and_relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path());
        let env = HashMap::from([("ULTRONCTL_CONFIG", "/nowhere.toml".to_string())]);
        let (config, used) = resolve(Some(&path), |k| env.get(k).cloned()).expect("resolve");
        assert_eq!(used, path);
        assert_eq!(config.ca, dir.path().join("ca.pem"));
        assert_eq!(config.cert, PathBuf::from("/abs/admin.pem"));
        assert_eq!(config.server_name(), "127.0.0.1");
    }

    #[test]
    fn variables_override_single_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path());
        let env = HashMap::from([
            ("ULTRONCTL_CONFIG", path.display().to_string()),
            ("ULTRONCTL_HIVE", "hive.example:7443".to_string()),
        ]);
        let (config, _) = resolve(None, |k| env.get(k).cloned()).expect("resolve");
        assert_eq!(config.hive, "hive.example:7443");
        assert_eq!(config.server_name(), "hive.example");
    }

    #[test]
    fn a_missing_file_says_where_to_get_one() {
        let err =
            resolve(Some(Path::new("/no/such/ultronctl.toml")), |_| None).expect_err("missing");
        let message = format!("{err:#}");
        assert!(
            message.contains("/no/such/ultronctl.toml") && message.contains("ultron8-hive init"),
            "{message}"
        );
    }
}
