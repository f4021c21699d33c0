//! Writes line-protocol batches to an InfluxDB-compatible HTTP API.
//!
//! v2 (`/api/v2/write`, InfluxDB 2.x/3.x, VictoriaMetrics) goes through the `influxdb2` client;
//! v1 (`/write?db=&rp=`, InfluxDB 1.x, VictoriaMetrics) through the same `reqwest` stack, since
//! the `influxdb2` crate speaks only v2. Timestamps are always nanoseconds.

use crate::config::{InfluxApi, InfluxConfig};

use super::WriteError;
use super::queue::Batch;
use std::sync::Arc;

/// A configured store connection.
pub struct InfluxWriter {
    target: Target,
}

enum Target {
    V2 {
        client: influxdb2::Client,
        org: String,
        bucket: String,
    },
    V1 {
        http: reqwest::Client,
        url: reqwest::Url,
        username: String,
        password: String,
    },
}

/// The writer could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The URL does not parse.
    #[error("storage.influx.url: invalid URL {url:?}: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl InfluxWriter {
    /// Builds the writer; nothing is sent until the first batch.
    pub fn new(cfg: &InfluxConfig) -> Result<Self, BuildError> {
        let bad_url = |e: url::ParseError| BuildError::Url {
            url: cfg.url.clone(),
            reason: e.to_string(),
        };
        let base = reqwest::Url::parse(&cfg.url).map_err(bad_url)?;
        let builder = || {
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(5)))
                // A store behind a redirect loop must fail fast, not hang the writer.
                .redirect(reqwest::redirect::Policy::limited(3))
        };
        let target = match cfg.api {
            InfluxApi::V2 => {
                let client = influxdb2::ClientBuilder::with_builder(
                    builder(),
                    base.as_str(),
                    &cfg.org,
                    &cfg.token,
                )
                .build()
                .map_err(|e| BuildError::Http(e.to_string()))?;
                Target::V2 {
                    client,
                    org: cfg.org.clone(),
                    bucket: cfg.bucket.clone(),
                }
            }
            InfluxApi::V1 => {
                let mut url = base.join("write").map_err(bad_url)?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("db", &cfg.db);
                    if !cfg.rp.is_empty() {
                        q.append_pair("rp", &cfg.rp);
                    }
                    q.append_pair("precision", "ns");
                }
                let http = builder()
                    .build()
                    .map_err(|e| BuildError::Http(e.to_string()))?;
                Target::V1 {
                    http,
                    url,
                    username: cfg.username.clone(),
                    password: cfg.password.clone(),
                }
            }
        };
        Ok(InfluxWriter { target })
    }

    /// Sends one batch body (see [`body_of`]); returns after the store answered 2xx.
    pub async fn write(&self, body: bytes::Bytes) -> Result<(), WriteError> {
        match &self.target {
            Target::V2 {
                client,
                org,
                bucket,
            } => client
                .write_line_protocol(org, bucket, body)
                .await
                .map_err(|e| match e {
                    influxdb2::RequestError::Http { status, text } => {
                        classify(status.as_u16(), text)
                    }
                    other => WriteError::Retryable(other.to_string()),
                }),
            Target::V1 {
                http,
                url,
                username,
                password,
            } => {
                let mut req = http.post(url.clone()).body(body);
                if !username.is_empty() {
                    req = req.basic_auth(username, Some(password));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| WriteError::Retryable(e.to_string()))?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                let text = resp.text().await.unwrap_or_default();
                Err(classify(status.as_u16(), text))
            }
        }
    }
}

/// The request body of a batch, sharing the batch's memory: a batch is megabytes, and a
/// copy per attempt was one more of them alive per write.
pub fn body_of(batch: &Arc<Batch>) -> bytes::Bytes {
    struct Shared(Arc<Batch>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0.body
        }
    }
    bytes::Bytes::from_owner(Shared(Arc::clone(batch)))
}

/// 4xx means the data itself is refused, except the statuses that mean "not now".
fn classify(status: u16, text: String) -> WriteError {
    let retry =
        !(400..500).contains(&status) || matches!(status, 401 | 403 | 404 | 408 | 413 | 429);
    if retry {
        WriteError::Retryable(format!("HTTP {status}: {}", text.trim()))
    } else {
        WriteError::Rejected {
            status,
            body: text.trim().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert!(matches!(
            classify(400, "bad".into()),
            WriteError::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify(422, "bad".into()),
            WriteError::Rejected { .. }
        ));
        for s in [401, 404, 408, 429, 500, 503] {
            assert!(
                matches!(classify(s, String::new()), WriteError::Retryable(_)),
                "{s}"
            );
        }
    }
}
