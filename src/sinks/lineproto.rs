//! (placeholder)

/// Escapes a tag key, tag value or field key.
pub fn escape_key(s: &str) -> String {
    s.to_string()
}

/// Builds a series key.
pub fn series_key(measurement: &str, tags: &[(&str, &str)]) -> String {
    let mut s = measurement.to_string();
    for (k, v) in tags {
        s.push(',');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}
