//! Test support: real clients' CONNECTs of each version, made by rumqttc's own encoders (3.1.1
//! and 5.0) or written out by hand (3.1, which rumqttc does not speak), with what each one says.
//! They are also the fuzz target's seed corpus, `fuzz/corpus/mqtt_connect/`, which a test keeps
//! equal to them.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5;

use super::connect::{ConnectInfo, Protocol};

/// One CONNECT as a client sends it.
pub(crate) struct Sample {
    /// What it is; its file name in the seed corpus.
    pub name: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// What the parser must find in it.
    pub info: ConnectInfo,
}

fn info(
    protocol: Protocol,
    client_id: &str,
    clean_start: bool,
    keep_alive: u16,
    username: Option<&str>,
    will: bool,
) -> ConnectInfo {
    ConnectInfo {
        protocol,
        client_id: client_id.to_string(),
        clean_start,
        keep_alive,
        username: username.map(str::to_string),
        will,
    }
}

fn encode_v4(connect: &v4::Connect) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    connect.write(&mut buffer).expect("rumqttc encodes it");
    buffer.to_vec()
}

fn v4_connect(
    client_id: &str,
    clean_session: bool,
    keep_alive: u16,
    login: Option<(&str, &str)>,
    will: bool,
) -> Vec<u8> {
    let mut connect = v4::Connect::new(client_id);
    connect.clean_session = clean_session;
    connect.keep_alive = keep_alive;
    if let Some((username, password)) = login {
        connect.set_login(username, password);
    }
    if will {
        connect.last_will = Some(v4::LastWill::new(
            "devices/sensor-17/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    }
    encode_v4(&connect)
}

/// A 3.1.1 CONNECT with a will, a username and a password.
pub(crate) fn v4_with_everything() -> Vec<u8> {
    v4_connect("sensor-17", false, 0, Some(("zoë", "s3cret")), true)
}

fn v5_properties() -> v5::ConnectProperties {
    let mut properties = v5::ConnectProperties::new();
    properties.session_expiry_interval = Some(3600);
    properties.receive_maximum = Some(32);
    properties.max_packet_size = Some(1 << 20);
    properties.topic_alias_max = Some(10);
    properties.user_properties = vec![("site".to_string(), "fra-1".to_string())];
    properties.authentication_method = Some("SCRAM-SHA-256".to_string());
    properties.authentication_data = Some(Bytes::from_static(b"n,,n=user,r=nonce"));
    properties
}

fn v5_will(properties: bool) -> v5::LastWill {
    let properties = properties.then(|| v5::LastWillProperties {
        delay_interval: Some(30),
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        content_type: Some("text/plain".to_string()),
        response_topic: Some("devices/sensor-17/reply".to_string()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01")),
        user_properties: vec![("reason".to_string(), "gone".to_string())],
    });
    v5::LastWill::new(
        "devices/sensor-17/status",
        "offline",
        QoS5::ExactlyOnce,
        false,
        properties,
    )
}

fn v5_connect(
    client_id: &str,
    clean_start: bool,
    keep_alive: u16,
    properties: Option<v5::ConnectProperties>,
    will: Option<v5::LastWill>,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    let connect = v5::Connect {
        keep_alive,
        client_id: client_id.to_string(),
        clean_start,
        properties,
    };
    let login = login.map(|(username, password)| v5::Login::new(username, password));
    let mut buffer = BytesMut::new();
    connect
        .write(&will, &login, &mut buffer)
        .expect("rumqttc encodes it");
    buffer.to_vec()
}

/// An MQTT 3.1 CONNECT as the Paho and IBM clients of that version send it (spec section 3.1):
/// protocol name `MQIsdp`, level 3.
fn v3_1_connect(
    client_id: &str,
    keep_alive: u16,
    will: Option<(&str, &str)>,
    login: Option<(&str, &str)>,
) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, value: &str) {
        let len = u16::try_from(value.len()).expect("a short string");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    let mut flags = 0x02; // clean session
    let mut body = Vec::new();
    string(&mut body, "MQIsdp");
    body.push(3);
    body.push(0); // flags, set below
    body.extend_from_slice(&keep_alive.to_be_bytes());
    string(&mut body, client_id);
    if let Some((topic, message)) = will {
        flags |= 0x04 | (1 << 3); // will, QoS 1
        string(&mut body, topic);
        string(&mut body, message);
    }
    if let Some((username, password)) = login {
        flags |= 0x80 | 0x40;
        string(&mut body, username);
        string(&mut body, password);
    }
    body[9] = flags;
    let len = u8::try_from(body.len()).expect("under 128 bytes: one length byte");
    let mut packet = vec![0x10, len];
    packet.extend_from_slice(&body);
    packet
}

/// Every sample: each version with and without will, username, password and properties.
pub(crate) fn samples() -> Vec<Sample> {
    use Protocol::{V3_1, V3_1_1, V5};
    let long_id = "x".repeat(200); // a remaining length of two bytes
    vec![
        Sample {
            name: "v3.1-minimal",
            bytes: v3_1_connect("paho-31", 60, None, None),
            info: info(V3_1, "paho-31", true, 60, None, false),
        },
        Sample {
            name: "v3.1-will-login",
            bytes: v3_1_connect("paho-31", 60, Some(("a/b", "bye")), Some(("bob", "pw"))),
            info: info(V3_1, "paho-31", true, 60, Some("bob"), true),
        },
        Sample {
            name: "v3.1.1-minimal",
            bytes: v4_connect("sensor-17", true, 10, None, false),
            info: info(V3_1_1, "sensor-17", true, 10, None, false),
        },
        Sample {
            name: "v3.1.1-empty-id",
            bytes: v4_connect("", true, 30, None, false),
            info: info(V3_1_1, "", true, 30, None, false),
        },
        Sample {
            name: "v3.1.1-login",
            bytes: v4_connect("sensor-17", false, 60, Some(("alice", "secret")), false),
            info: info(V3_1_1, "sensor-17", false, 60, Some("alice"), false),
        },
        Sample {
            name: "v3.1.1-will",
            bytes: v4_connect("sensor-17", true, 60, None, true),
            info: info(V3_1_1, "sensor-17", true, 60, None, true),
        },
        Sample {
            name: "v3.1.1-will-login",
            bytes: v4_with_everything(),
            info: info(V3_1_1, "sensor-17", false, 0, Some("zoë"), true),
        },
        Sample {
            name: "v3.1.1-long-id",
            bytes: v4_connect(&long_id, true, 60, None, false),
            info: info(V3_1_1, &long_id, true, 60, None, false),
        },
        Sample {
            name: "v5-minimal",
            bytes: v5_connect("sensor-17", true, 30, None, None, None),
            info: info(V5, "sensor-17", true, 30, None, false),
        },
        Sample {
            name: "v5-empty-id",
            bytes: v5_connect("", true, 30, None, None, None),
            info: info(V5, "", true, 30, None, false),
        },
        Sample {
            name: "v5-properties-login",
            bytes: v5_connect(
                "sensor-17",
                false,
                60,
                Some(v5_properties()),
                None,
                Some(("alice", "secret")),
            ),
            info: info(V5, "sensor-17", false, 60, Some("alice"), false),
        },
        Sample {
            name: "v5-will",
            bytes: v5_connect("sensor-17", true, 60, None, Some(v5_will(false)), None),
            info: info(V5, "sensor-17", true, 60, None, true),
        },
        Sample {
            name: "v5-everything",
            bytes: v5_connect(
                "sensor-17",
                false,
                120,
                Some(v5_properties()),
                Some(v5_will(true)),
                Some(("alice", "secret")),
            ),
            info: info(V5, "sensor-17", false, 120, Some("alice"), true),
        },
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::samples;

    /// The fuzz target's seed corpus is the samples' bytes, plus one CONNECT followed by the
    /// client's next packet. `BROKERSIDE_WRITE_FUZZ_SEEDS=1 cargo test --lib seed_corpus` writes
    /// it after the samples change.
    #[test]
    fn the_fuzz_seed_corpus_is_the_samples() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/mqtt_connect");
        let mut seeds: Vec<(String, Vec<u8>)> = samples()
            .into_iter()
            .map(|sample| (sample.name.to_string(), sample.bytes))
            .collect();
        let mut pipelined = seeds[2].1.clone();
        pipelined.extend_from_slice(&[0xc0, 0x00]); // PINGREQ
        seeds.push(("v3.1.1-then-pingreq".to_string(), pipelined));
        let write = std::env::var_os("BROKERSIDE_WRITE_FUZZ_SEEDS").is_some();
        if write {
            std::fs::create_dir_all(&dir).expect("create the corpus directory");
        }
        for (name, bytes) in seeds {
            let path = dir.join(&name);
            if write {
                std::fs::write(&path, &bytes).expect("write a seed");
            }
            let committed =
                std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert!(
                committed == bytes,
                "{} differs from the sample: BROKERSIDE_WRITE_FUZZ_SEEDS=1 rewrites it",
                path.display()
            );
        }
    }
}
