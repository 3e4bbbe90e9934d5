//! Probes: what the hive checks on targets that need not run a drone (an
//! HTTP answer, a TCP port), and how one answer is judged. The thresholds,
//! recovery and flapping of a probe are [`crate::health`]'s, as for checks.
//!
//! Pure: the hive's probe loop does the I/O and asks this module where to
//! connect and what the answer means.

use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::health::{RunOutcome, Thresholds};

/// What a probe checks on each of its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeCheck {
    Http(HttpProbe),
    Tcp(TcpProbe),
}

impl ProbeCheck {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Tcp(_) => "tcp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// An HTTP GET of `path` on each target; passes when the status is
/// expected (2xx unless listed) and the body matches `body` (a regular
/// expression), if given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpProbe {
    #[serde(default)]
    pub scheme: Scheme,
    /// Overrides the target's port; else the target's, else the scheme's.
    pub port: Option<u16>,
    pub path: String,
    /// Expected status codes; empty means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// A regular expression the body must match.
    pub body: Option<String>,
}

/// A TCP connect to each target; passes when the connection is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpProbe {
    /// Overrides the target's port; a target without one needs it.
    pub port: Option<u16>,
}

/// Which targets a probe runs against: the discovered instances of a source
/// and/or a service, plus any listed here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProbeTargets {
    /// Instances discovered by this source (its name).
    pub source: Option<String>,
    /// Instances of this service, from whichever source.
    pub service: Option<String>,
    /// Addresses (`host`, `host:port`, `[::1]:port`) probed as they are.
    #[serde(default, rename = "static")]
    pub listed: Vec<String>,
}

impl ProbeTargets {
    /// Whether discovered instances are selected at all (a probe with only
    /// a static list does not read the inventory).
    pub fn reads_inventory(&self) -> bool {
        self.source.is_some() || self.service.is_some()
    }

    /// Whether a discovered instance of `source` and `service` is selected.
    pub fn selects(&self, source: &str, service: Option<&str>) -> bool {
        self.reads_inventory()
            && self.source.as_deref().is_none_or(|wanted| wanted == source)
            && self
                .service
                .as_deref()
                .is_none_or(|wanted| Some(wanted) == service)
    }
}

/// A probe as a pack declares it (`sensors/<name>.yaml`, `kind: probe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub targets: ProbeTargets,
    pub check: ProbeCheck,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

/// Where to connect: a host (name or IP, IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `host:port`, with IPv6 hosts in brackets, as sockets and URLs take.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("empty address")]
    Empty,
    #[error("address {0:?} has an invalid port")]
    BadPort(String),
    #[error("address {0:?} names no port and the probe sets none")]
    NoPort(String),
    #[error("address {0:?} is not a host, host:port or [ipv6]:port")]
    Malformed(String),
}

/// Splits a target's address into host and port: `web-1`, `127.0.0.5:8080`,
/// `::1`, `[::1]:8080`. `port` (the probe's) wins over the address's; a
/// missing port is `default`'s, or an error without one.
pub fn endpoint(
    address: &str,
    port: Option<u16>,
    default: Option<u16>,
) -> Result<Endpoint, EndpointError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(EndpointError::Empty);
    }
    let malformed = || EndpointError::Malformed(address.to_owned());
    let parse_port = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| EndpointError::BadPort(address.to_owned()))
    };
    let (host, own_port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(malformed)?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(parse_port(after.strip_prefix(':').ok_or_else(malformed)?)?),
            ),
        }
    } else if address.matches(':').count() > 1 {
        // A bare IPv6 address: colons are the address's, not a port.
        (address, None)
    } else if let Some((host, text)) = address.split_once(':') {
        (host, Some(parse_port(text)?))
    } else {
        (address, None)
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(malformed());
    }
    let port = port
        .or(own_port)
        .or(default)
        .ok_or_else(|| EndpointError::NoPort(address.to_owned()))?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// The URL an HTTP probe fetches on a target.
pub fn http_url(probe: &HttpProbe, address: &str) -> Result<String, EndpointError> {
    let endpoint = endpoint(address, probe.port, Some(probe.scheme.default_port()))?;
    let path = if probe.path.starts_with('/') {
        probe.path.clone()
    } else {
        format!("/{}", probe.path)
    };
    Ok(format!(
        "{}://{}{}",
        probe.scheme.as_str(),
        endpoint.authority(),
        path
    ))
}

/// One run's verdict and what a person reads about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: RunOutcome,
    pub detail: String,
}

impl Verdict {
    pub fn healthy(detail: impl Into<String>) -> Self {
        Self {
            outcome: RunOutcome::Healthy,
            detail: detail.into(),
        }
    }

    pub fn unhealthy(detail: impl Into<String>) -> Self {
        Self {
            outcome: RunOutcome::Unhealthy,
            detail: detail.into(),
        }
    }

    pub fn error(detail: impl Into<String>) -> Self {
        Self {
            outcome: RunOutcome::Error,
            detail: detail.into(),
        }
    }
}

/// Judges an HTTP answer. `body` is the regular expression compiled from
/// `probe.body` (the caller compiles it once).
pub fn judge_http(
    probe: &HttpProbe,
    body_pattern: Option<&Regex>,
    status: u16,
    body: &str,
) -> Verdict {
    let status_ok = if probe.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        probe.expect_status.contains(&status)
    };
    if !status_ok {
        let expected = if probe.expect_status.is_empty() {
            "2xx".to_owned()
        } else {
            probe
                .expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        return Verdict::unhealthy(format!("HTTP {status}, expected {expected}"));
    }
    match body_pattern {
        Some(pattern) if !pattern.is_match(body) => Verdict::unhealthy(format!(
            "HTTP {status}, body does not match /{}/",
            pattern.as_str()
        )),
        _ => Verdict::healthy(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn http(port: Option<u16>, path: &str, expect_status: Vec<u16>) -> HttpProbe {
        HttpProbe {
            scheme: Scheme::Http,
            port,
            path: path.into(),
            expect_status,
            body: None,
        }
    }

    #[test]
    fn endpoints_from_addresses() {
        let ok = |address, port, default| endpoint(address, port, default).map(|e| e.authority());
        assert_eq!(ok("127.77.0.5", None, Some(80)), Ok("127.77.0.5:80".into()));
        assert_eq!(
            ok("127.77.0.5:8080", None, Some(80)),
            Ok("127.77.0.5:8080".into())
        );
        assert_eq!(
            ok("127.77.0.5:8080", Some(9000), None),
            Ok("127.77.0.5:9000".into())
        );
        assert_eq!(ok("::1", None, Some(80)), Ok("[::1]:80".into()));
        assert_eq!(ok("[::1]:8443", None, None), Ok("[::1]:8443".into()));
        assert_eq!(ok("[::1]", Some(22), None), Ok("[::1]:22".into()));
        assert_eq!(ok(" web-1 ", None, Some(80)), Ok("web-1:80".into()));
        assert_eq!(ok("", None, Some(80)), Err(EndpointError::Empty));
        assert_eq!(
            ok("web-1", None, None),
            Err(EndpointError::NoPort("web-1".into()))
        );
        assert_eq!(
            ok("web-1:http", None, None),
            Err(EndpointError::BadPort("web-1:http".into()))
        );
        assert_eq!(
            ok("web-1:0", None, None),
            Err(EndpointError::BadPort("web-1:0".into()))
        );
        assert_eq!(
            ok("http://web-1/", None, Some(80)),
            Err(EndpointError::BadPort("http://web-1/".into()))
        );
        assert_eq!(
            ok("user@web-1", None, Some(80)),
            Err(EndpointError::Malformed("user@web-1".into()))
        );
        assert_eq!(
            ok("[::1", None, Some(80)),
            Err(EndpointError::Malformed("[::1".into()))
        );
    }

    #[test]
    fn http_urls() {
        assert_eq!(
            http_url(&http(None, "/healthz", vec![]), "127.77.0.5:8080"),
            Ok("http://127.77.0.5:8080/healthz".into())
        );
        assert_eq!(
            http_url(&http(Some(9090), "ready", vec![]), "[::1]"),
            Ok("http://[::1]:9090/ready".into())
        );
        let mut https = http(None, "/", vec![]);
        https.scheme = Scheme::Https;
        assert_eq!(http_url(&https, "web-1"), Ok("https://web-1:443/".into()));
    }

    #[test]
    fn judges_status_and_body() {
        let probe = http(None, "/", vec![]);
        assert_eq!(
            judge_http(&probe, None, 204, "").outcome,
            RunOutcome::Healthy
        );
        let verdict = judge_http(&probe, None, 503, "");
        assert_eq!(verdict, Verdict::unhealthy("HTTP 503, expected 2xx"));
        let probe = http(None, "/", vec![200, 301]);
        assert_eq!(
            judge_http(&probe, None, 301, "").outcome,
            RunOutcome::Healthy
        );
        assert_eq!(
            judge_http(&probe, None, 204, "").detail,
            "HTTP 204, expected 200 or 301"
        );
        let pattern = Regex::new("\"status\":\\s*\"ok\"").expect("valid");
        assert_eq!(
            judge_http(&probe, Some(&pattern), 200, r#"{"status": "ok"}"#).outcome,
            RunOutcome::Healthy
        );
        assert_eq!(
            judge_http(&probe, Some(&pattern), 200, r#"{"status": "degraded"}"#).detail,
            "HTTP 200, body does not match /\"status\":\\s*\"ok\"/"
        );
    }

    #[test]
    fn target_selection() {
        let by_service = ProbeTargets {
            service: Some("UserService".into()),
            ..Default::default()
        };
        assert!(by_service.selects("cloud", Some("UserService")));
        assert!(!by_service.selects("cloud", Some("AuthService")));
        assert!(!by_service.selects("cloud", None));
        let by_both = ProbeTargets {
            source: Some("cloud".into()),
            service: Some("UserService".into()),
            ..Default::default()
        };
        assert!(!by_both.selects("files", Some("UserService")));
        let listed = ProbeTargets {
            listed: vec!["127.0.0.1:80".into()],
            ..Default::default()
        };
        assert!(!listed.reads_inventory());
        assert!(!listed.selects("cloud", Some("UserService")));
    }

    proptest! {
        /// Any IPv4 loopback address with any port comes back as it went in.
        #[test]
        fn ipv4_with_port_round_trips(b in 0u8.., c in 0u8.., d in 0u8.., port in 1u16..) {
            let address = format!("127.{b}.{c}.{d}:{port}");
            prop_assert_eq!(endpoint(&address, None, None).map(|e| e.authority()), Ok(address));
        }

        /// Nothing panics, whatever the address.
        #[test]
        fn any_address_is_judged(address in ".{0,40}", port in proptest::option::of(0u16..)) {
            let _ = endpoint(&address, port, Some(80));
        }
    }
}
