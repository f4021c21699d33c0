//! The broker connection: one `rumqttc` client for MQTT 3.1.1 or 5 behind one small
//! interface, and the rustls TLS setup.
//!
//! rumqttc has separate types for v4 (3.1.1) and v5; the source only needs "connected",
//! "subscribed", "a message" and "an error", so [`Conn::poll`] folds both into [`Event`].
//! Acks are manual: a message is acknowledged only after its readings are in the pipeline,
//! so a crash before that gets it redelivered (the broker keeps it in the session).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{QoS, TlsConfiguration, Transport};

use crate::config::{MqttConfig, MqttProtocol, MqttTlsConfig};

/// Requests (acks, subscriptions) the client may queue for the event loop. Larger than any
/// broker's in-flight window, so acks never wait.
const REQUEST_CAPACITY: usize = 4096;

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `broker` is not `host:port`.
    #[error("mqtt.broker: expected host:port, got {0:?}")]
    Broker(String),
    /// A TLS file could not be read.
    #[error("mqtt.tls: cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS file holds no usable certificate or key.
    #[error("mqtt.tls: {0}")]
    Tls(String),
}

/// A message to acknowledge once it is safely handed on.
pub enum AckToken {
    /// MQTT 3.1.1.
    V4(rumqttc::Publish),
    /// MQTT 5.
    V5(v5::mqttbytes::v5::Publish),
}

/// What the event loop reported.
// Messages dominate and are moved once, straight from `poll` to the handler: boxing them
// would add an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// The broker accepted the connection.
    Connected {
        /// The broker still had our session (subscriptions and queued messages).
        session_present: bool,
    },
    /// A subscription was answered; `failed` if the broker refused any filter.
    Subscribed {
        /// Any filter refused.
        failed: bool,
    },
    /// An application message.
    Message {
        /// Topic (lossily decoded for MQTT 5, where it is bytes).
        topic: String,
        /// Payload.
        payload: Bytes,
        /// Acknowledge with [`Conn::ack`] after handling.
        ack: AckToken,
    },
    /// Anything else (pings, acks of our own requests).
    Other,
}

/// One MQTT connection, either protocol.
pub enum Conn {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(v5::AsyncClient, Box<v5::EventLoop>),
}

fn split_broker(broker: &str) -> Result<(String, u16), ClientError> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| ClientError::Broker(broker.to_string()))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| ClientError::Broker(broker.to_string()))?;
    if host.is_empty() || port == 0 {
        return Err(ClientError::Broker(broker.to_string()));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

fn read_pem(path: &Path) -> Result<BufReader<File>, ClientError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| ClientError::TlsFile {
            path: path.display().to_string(),
            source,
        })
}

/// Builds the rustls client config (ring provider): CA roots, optional client certificate.
pub fn tls_config(tls: &MqttTlsConfig) -> Result<rustls::ClientConfig, ClientError> {
    // rumqttc is built without a provider; install ring once for the process (a second
    // install fails harmlessly), and name it explicitly for this config too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read_pem(&tls.ca_file)?) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("ca_file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("ca_file: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(format!(
            "ca_file {} holds no certificate",
            tls.ca_file.display()
        )));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut read_pem(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Tls(format!("client_cert: {e}")))?;
            let key = rustls_pemfile::private_key(&mut read_pem(key)?)
                .map_err(|e| ClientError::Tls(format!("client_key: {e}")))?
                .ok_or_else(|| ClientError::Tls("client_key holds no private key".into()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ClientError::Tls(format!("client_cert/client_key: {e}")))
        }
        _ => Err(ClientError::Tls(
            "client_cert and client_key go together".into(),
        )),
    }
}

impl Conn {
    /// Creates the client; nothing is sent until the first [`Conn::poll`].
    pub fn new(cfg: &MqttConfig) -> Result<Conn, ClientError> {
        let (host, port) = split_broker(&cfg.broker)?;
        let transport = match &cfg.tls {
            Some(tls) => Some(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls_config(tls)?),
            ))),
            None => None,
        };
        let keep_alive = cfg.keep_alive.max(std::time::Duration::from_secs(5));
        let max_packet = cfg.max_payload.saturating_add(1024);
        Ok(match cfg.protocol {
            MqttProtocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(cfg.client_id.clone(), host, port);
                o.set_keep_alive(keep_alive)
                    .set_clean_session(cfg.clean_session)
                    .set_manual_acks(true)
                    .set_request_channel_capacity(REQUEST_CAPACITY)
                    .set_max_packet_size(max_packet, max_packet);
                if !cfg.username.is_empty() {
                    o.set_credentials(cfg.username.clone(), cfg.password.clone());
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, eventloop) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                Conn::V4(client, Box::new(eventloop))
            }
            MqttProtocol::V5 => {
                let mut o = v5::MqttOptions::new(cfg.client_id.clone(), host, port);
                let expiry = u32::try_from(cfg.session_expiry.as_secs()).unwrap_or(u32::MAX);
                o.set_keep_alive(keep_alive)
                    .set_clean_start(cfg.clean_session)
                    .set_session_expiry_interval((!cfg.clean_session).then_some(expiry))
                    .set_manual_acks(true)
                    .set_request_channel_capacity(REQUEST_CAPACITY)
                    .set_max_packet_size(u32::try_from(max_packet).ok());
                if !cfg.username.is_empty() {
                    o.set_credentials(cfg.username.clone(), cfg.password.clone());
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, eventloop) = v5::AsyncClient::new(o, REQUEST_CAPACITY);
                Conn::V5(client, Box::new(eventloop))
            }
        })
    }

    /// The next event; an error means the connection is down (the next poll reconnects).
    pub async fn poll(&mut self) -> Result<Event, String> {
        match self {
            Conn::V4(_, el) => {
                use rumqttc::{Event as E, Packet};
                match el.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(ack))) => Ok(Event::Connected {
                        session_present: ack.session_present,
                    }),
                    Ok(E::Incoming(Packet::SubAck(ack))) => Ok(Event::Subscribed {
                        failed: ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                    }),
                    Ok(E::Incoming(Packet::Publish(p))) => Ok(Event::Message {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        ack: AckToken::V4(p),
                    }),
                    Ok(_) => Ok(Event::Other),
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => Err(refused_v4(code)),
                    Err(e) => Err(e.to_string()),
                }
            }
            Conn::V5(_, el) => {
                use v5::mqttbytes::v5::Packet;
                use v5::{ConnectionError, Event as E};
                match el.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(ack))) => Ok(Event::Connected {
                        session_present: ack.session_present,
                    }),
                    Ok(E::Incoming(Packet::SubAck(ack))) => Ok(Event::Subscribed {
                        failed: ack.return_codes.iter().any(|c| {
                            !matches!(c, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                        }),
                    }),
                    Ok(E::Incoming(Packet::Publish(p))) => Ok(Event::Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.clone(),
                        ack: AckToken::V5(p),
                    }),
                    Ok(_) => Ok(Event::Other),
                    Err(ConnectionError::ConnectionRefused(code)) => Err(format!(
                        "broker refused the connection: {code:?} (check mqtt.username / mqtt.password / mqtt.client_id)"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Queues a QoS 1 subscription to every filter (never waits).
    pub fn subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Conn::V4(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
                )
                .map_err(|e| e.to_string()),
            Conn::V5(c, _) => c
                .try_subscribe_many(filters.iter().map(|f| {
                    v5::mqttbytes::v5::Filter::new(f.clone(), v5::mqttbytes::QoS::AtLeastOnce)
                }))
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledges a handled message (never waits; see [`REQUEST_CAPACITY`]).
    pub fn ack(&self, token: &AckToken) -> Result<(), String> {
        match (self, token) {
            (Conn::V4(c, _), AckToken::V4(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Conn::V5(c, _), AckToken::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }

    /// Sends DISCONNECT and drives the event loop until it is out (bounded by `within`).
    pub async fn disconnect(&mut self, within: std::time::Duration) {
        let _ = tokio::time::timeout(within, async {
            match self {
                Conn::V4(c, el) => {
                    if c.try_disconnect().is_err() {
                        return;
                    }
                    loop {
                        match el.poll().await {
                            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))
                            | Err(_) => {
                                return;
                            }
                            Ok(_) => {}
                        }
                    }
                }
                Conn::V5(c, el) => {
                    if c.try_disconnect().is_err() {
                        return;
                    }
                    loop {
                        match el.poll().await {
                            Ok(v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => {
                                return;
                            }
                            Ok(_) => {}
                        }
                    }
                }
            }
        })
        .await;
    }
}

fn refused_v4(code: rumqttc::ConnectReturnCode) -> String {
    use rumqttc::ConnectReturnCode as C;
    let why = match code {
        C::BadUserNamePassword => "bad user name or password (check mqtt.username / mqtt.password)",
        C::NotAuthorized => {
            "not authorized (check mqtt.username / mqtt.password and the broker's ACL)"
        }
        C::BadClientId => "client id rejected (check mqtt.client_id)",
        C::RefusedProtocolVersion => "protocol version refused (try mqtt.protocol)",
        C::ServiceUnavailable => "service unavailable",
        C::Success => "success",
    };
    format!("broker refused the connection: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        assert_eq!(
            split_broker("127.0.0.1:1883").ok(),
            Some(("127.0.0.1".into(), 1883))
        );
        assert_eq!(split_broker("[::1]:8883").ok(), Some(("::1".into(), 8883)));
        assert!(split_broker("broker").is_err());
        assert!(split_broker(":1883").is_err());
        assert!(split_broker("h:0").is_err());
    }

    #[test]
    fn tls_needs_a_readable_ca() {
        let cfg = MqttTlsConfig {
            ca_file: "/nonexistent/ca.pem".into(),
            client_cert: None,
            client_key: None,
        };
        assert!(matches!(tls_config(&cfg), Err(ClientError::TlsFile { .. })));
    }
}
