//! A tiny authoritative DNS server on `127.0.0.1:0` (UDP) for the DNS discovery tests: it
//! answers A and AAAA queries from a table the test changes as it goes (no internet).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// The server; answers until the test's runtime ends.
pub struct DnsServer {
    pub addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
}

impl DnsServer {
    /// Starts answering; every name is unknown (NXDOMAIN) until [`Self::set`].
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Arc<Mutex<HashMap<String, Vec<IpAddr>>>> = Arc::default();
        let table = records.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&query, &table.lock().unwrap());
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Self { addr, records }
    }

    /// `name` resolves to `ips` from now on (an empty list: no records, NOERROR).
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        self.records.lock().unwrap().insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            ips.to_vec(),
        );
    }
}

fn answer(query: &Message, table: &HashMap<String, Vec<IpAddr>>) -> Message {
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    for q in query.queries() {
        response.add_query(q.clone());
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let Some(ips) = table.get(&name) else {
            response.set_response_code(ResponseCode::NXDomain);
            continue;
        };
        for ip in ips {
            let rdata = match (q.query_type(), ip) {
                (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            response.add_answer(Record::from_rdata(q.name().clone(), 1, rdata));
        }
    }
    response
}
