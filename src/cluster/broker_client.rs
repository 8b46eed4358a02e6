//! Brokers calling each other over the Kafka protocol (what Kafka's inter-broker listener
//! carries): today WriteTxnMarkers, from a transaction coordinator to the leaders of its
//! transaction's partitions on other brokers. One connection per call: these calls are rare
//! (one per transaction end and remote broker), and a fresh connection has no state to go stale.

use super::network::connect_from;
use crate::protocol::client;
use crate::protocol::errors::ErrorCode;
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest,
};
use kafka_protocol::messages::{ProducerId, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use std::time::Duration;

/// WriteTxnMarkers version spoken between brokers.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// A call to another broker gives up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `req` to the broker at `addr` on a connection of its own and reads its answer,
/// within `CALL_TIMEOUT`.
pub async fn call<R: Request>(
    addr: &str,
    source: Option<std::net::IpAddr>,
    req: &R,
    version: i16,
    client_id: &str,
) -> anyhow::Result<R::Response> {
    let mut c = BrokerConnection::connect(addr, source, client_id).await?;
    c.call(req, version, CALL_TIMEOUT).await
}

/// Writes the commit or abort marker of producer `pid` (at `epoch`) into `partitions`, all
/// led by the broker at `addr`; Ok once that broker has them durable.
pub async fn write_txn_markers(
    addr: &str,
    me: i32,
    pid: i64,
    epoch: i16,
    commit: bool,
    partitions: &[(String, i32)],
) -> Result<(), String> {
    let mut topics: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in partitions {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        );
    let req = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let client_id = format!("flumen-broker-{me}");
    let resp = call(addr, None, &req, WRITE_TXN_MARKERS_VERSION, &client_id)
        .await
        .map_err(|e| e.to_string())?;
    for m in &resp.markers {
        for t in &m.topics {
            for p in &t.partitions {
                if p.error_code != ErrorCode::NONE.0 {
                    return Err(format!(
                        "broker {addr}: marker for {}-{}: Kafka error {}",
                        t.name.0.as_str(),
                        p.partition_index,
                        p.error_code
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A connection to another broker kept across calls (a follower's fetcher calls its leader
/// several times a second). A failed or timed-out call leaves it unusable: drop it.
pub struct BrokerConnection {
    pub addr: String,
    stream: glommio::net::TcpStream,
    correlation: i32,
    client_id: String,
}

impl BrokerConnection {
    /// Connects from `source` (this broker's address, so a firewall rule on addresses cuts
    /// this link as it cuts the others).
    pub async fn connect(
        addr: &str,
        source: Option<std::net::IpAddr>,
        client_id: &str,
    ) -> anyhow::Result<BrokerConnection> {
        let stream = super::deadline(CALL_TIMEOUT, connect_from(addr, source))
            .await
            .and_then(|r| r)
            .map_err(|e| anyhow::anyhow!("connecting to broker {addr}: {e}"))?;
        let mut c = BrokerConnection {
            addr: addr.to_string(),
            stream,
            correlation: 0,
            client_id: client_id.to_string(),
        };
        if let Some((user, password)) = crate::security::inter_broker_login() {
            c.login_plain(user, password).await?;
        }
        Ok(c)
    }

    /// SASL PLAIN on the inter-broker listener (SaslHandshake v1, SaslAuthenticate v1).
    async fn login_plain(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let hs = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        let r = self.call(&hs, 1, CALL_TIMEOUT).await?;
        anyhow::ensure!(
            r.error_code == 0,
            "broker {}: SaslHandshake PLAIN answered error {}",
            self.addr,
            r.error_code
        );
        let token = format!("\0{user}\0{password}");
        let auth = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let r = self.call(&auth, 1, CALL_TIMEOUT).await?;
        anyhow::ensure!(
            r.error_code == 0,
            "broker {}: logging in as {user} failed (error {}): {}",
            self.addr,
            r.error_code,
            r.error_message.as_deref().unwrap_or("")
        );
        Ok(())
    }

    /// Sends `req` and reads its answer within `timeout`.
    pub async fn call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> anyhow::Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let correlation = self.correlation;
        let frame = client::encode_request(req, version, correlation, &self.client_id)?;
        let s = &mut self.stream;
        let body = super::deadline(timeout, async {
            s.write_all(&frame).await?;
            s.flush().await?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await?;
            let n = client::response_len(len).map_err(std::io::Error::other)?;
            let mut body = vec![0u8; n];
            s.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        })
        .await
        .and_then(|r| r)
        .map_err(|e| anyhow::anyhow!("calling broker {}: {e}", self.addr))?;
        client::decode_response::<R>(Bytes::from(body), version, correlation)
    }
}
