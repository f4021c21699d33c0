//! Topic patterns: `meters/{device}/telemetry`, `ami/{site}/{feeder}/{device}/{field}`.
//!
//! A pattern is a list of `/`-separated levels. A level is either literal text, a capture
//! (`{device}`, `{site}`, `{feeder}`, `{parent}`, `{field}`), a wildcard (`+` or `{_}`), or a
//! final `#` matching the rest. Matching a topic yields the captured levels, borrowed from
//! the topic, without allocating. The MQTT filter to subscribe to is the pattern with every
//! capture replaced by `+`.

/// What a capture fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// The device id (required in every pattern).
    Device,
    /// The `site` tag.
    Site,
    /// The `feeder` tag.
    Feeder,
    /// The parent device id.
    Parent,
    /// The field name (plain-number payloads).
    Field,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Capture(Capture),
    Any,
    Rest,
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("the pattern is empty")]
    Empty,
    /// `{name}` is not a known capture.
    #[error("unknown capture {{{0}}} (expected device, site, feeder, parent, field or _)")]
    UnknownCapture(String),
    /// A capture appears twice.
    #[error("{{{0}}} appears twice")]
    Repeated(String),
    /// `{device}` is missing.
    #[error("the pattern needs a {{device}} level")]
    NoDevice,
    /// `#` is not the last level, or wildcards are mixed with text in one level.
    #[error("bad level {0:?}: `#` must be the whole last level, `+` and `{{..}}` a whole level")]
    BadLevel(String),
}

/// The levels a topic filled in; `None` where the pattern has no such capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Captures<'t> {
    /// Device id.
    pub device: &'t str,
    /// Site.
    pub site: Option<&'t str>,
    /// Feeder.
    pub feeder: Option<&'t str>,
    /// Parent device.
    pub parent: Option<&'t str>,
    /// Field name.
    pub field: Option<&'t str>,
}

impl TopicPattern {
    /// Parses `pattern`; `require_device` is false only for line protocol, where the device
    /// may come from the `device` tag instead.
    pub fn parse(pattern: &str, require_device: bool) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut seen: Vec<Capture> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" | "{_}" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    let c = match name {
                        "device" => Capture::Device,
                        "site" => Capture::Site,
                        "feeder" => Capture::Feeder,
                        "parent" => Capture::Parent,
                        "field" => Capture::Field,
                        other => return Err(PatternError::UnknownCapture(other.to_string())),
                    };
                    if seen.contains(&c) {
                        return Err(PatternError::Repeated(name.to_string()));
                    }
                    seen.push(c);
                    Level::Capture(c)
                }
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(PatternError::BadLevel(p.to_string()));
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        if require_device && !seen.contains(&Capture::Device) {
            return Err(PatternError::NoDevice);
        }
        Ok(TopicPattern { levels })
    }

    /// The MQTT subscription filter: captures become `+`.
    pub fn filter(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect();
        parts.join("/")
    }

    /// Whether the pattern captures `c`.
    pub fn has(&self, c: Capture) -> bool {
        self.levels.contains(&Level::Capture(c))
    }

    /// Matches `topic`; `None` when it does not fit or a captured level is empty.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let mut caps = Captures::default();
        let mut parts = topic.split('/');
        for level in &self.levels {
            if *level == Level::Rest {
                return Some(caps);
            }
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s != part => return None,
                Level::Literal(_) | Level::Any | Level::Rest => {}
                Level::Capture(c) => {
                    if part.is_empty() {
                        return None;
                    }
                    match c {
                        Capture::Device => caps.device = part,
                        Capture::Site => caps.site = Some(part),
                        Capture::Feeder => caps.feeder = Some(part),
                        Capture::Parent => caps.parent = Some(part),
                        Capture::Field => caps.field = Some(part),
                    }
                }
            }
        }
        parts.next().is_none().then_some(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_pattern_captures_the_device() {
        let p = TopicPattern::parse("meters/{device}/telemetry", true).unwrap();
        assert_eq!(p.filter(), "meters/+/telemetry");
        let c = p.matches("meters/MQ-0001/telemetry").unwrap();
        assert_eq!(c.device, "MQ-0001");
        assert_eq!(c.site, None);
        assert!(p.matches("meters/MQ-0001/status").is_none());
        assert!(p.matches("meters/MQ-0001/telemetry/x").is_none());
        assert!(p.matches("meters/MQ-0001").is_none());
        assert!(p.matches("meters//telemetry").is_none(), "empty device id");
    }

    #[test]
    fn location_captures_and_wildcards() {
        let p = TopicPattern::parse("ami/{site}/{feeder}/+/{device}/{field}", true).unwrap();
        assert_eq!(p.filter(), "ami/+/+/+/+/+");
        let c = p.matches("ami/S7/F07/x/MT-1/voltage_a").unwrap();
        assert_eq!(
            (c.site, c.feeder, c.device, c.field),
            (Some("S7"), Some("F07"), "MT-1", Some("voltage_a"))
        );
        let rest = TopicPattern::parse("m/{device}/#", true).unwrap();
        assert_eq!(rest.filter(), "m/+/#");
        assert_eq!(rest.matches("m/a/b/c").map(|c| c.device), Some("a"));
        assert_eq!(rest.matches("m/a").map(|c| c.device), Some("a"));
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert_eq!(
            TopicPattern::parse("meters/+/telemetry", true),
            Err(PatternError::NoDevice)
        );
        assert!(TopicPattern::parse("meters/+/telemetry", false).is_ok());
        assert_eq!(
            TopicPattern::parse("m/{dev}", true),
            Err(PatternError::UnknownCapture("dev".into()))
        );
        assert_eq!(
            TopicPattern::parse("m/{device}/{device}", true),
            Err(PatternError::Repeated("device".into()))
        );
        assert!(matches!(
            TopicPattern::parse("m/#/{device}", true),
            Err(PatternError::BadLevel(_))
        ));
        assert!(matches!(
            TopicPattern::parse("m/x+/{device}", true),
            Err(PatternError::BadLevel(_))
        ));
        assert_eq!(TopicPattern::parse("", true), Err(PatternError::Empty));
    }
}
