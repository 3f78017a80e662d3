//! The peer list as others read it: the JSON of `GET /peers`, the one-node-a-line form of
//! `?format=nodes`, and the peers file (either form) written atomically for EMQX static seeds
//! or a BEAM release.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use super::{Peer, Source};
use crate::config::PeersFileFormat;

/// The JSON list of `source`'s current peers: `[{"address", "port", "node", "source"}]`, in the
/// set's order. `/peers` adds `healthy` to each entry.
pub fn peers_json(source: &Source) -> Value {
    peers_value(&source.name, &source.peers().peers)
}

/// `peers` of the source named `source` as the `/peers` JSON list.
fn peers_value(source: &str, peers: &[Peer]) -> Value {
    Value::Array(
        peers
            .iter()
            .map(|peer| {
                json!({
                    "address": peer.ip.to_string(),
                    "port": peer.port,
                    "node": peer.node,
                    "source": source,
                })
            })
            .collect(),
    )
}

/// One node name a line, sorted, each line ending in `\n` (empty for no peers).
pub fn peers_lines(peers: &[Peer]) -> String {
    let mut nodes: Vec<&str> = peers.iter().map(|p| p.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.iter().map(|node| format!("{node}\n")).collect()
}

/// Writes `peers` of `source` to `path` in `format`, atomically: a temporary file in the same
/// directory is written, synced and renamed over `path`, so a reader sees the old file or the
/// new one, never a part. Blocking: call it from a blocking task.
pub fn write_peers_file(
    path: &Path,
    format: PeersFileFormat,
    source: &str,
    peers: &[Peer],
) -> std::io::Result<()> {
    let contents = match format {
        PeersFileFormat::Lines => peers_lines(peers),
        PeersFileFormat::Json => format!("{}\n", peers_value(source, peers)),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the peers file path names no file"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename is durable once the directory is synced; a failure here leaves the new
        // file in place, so it is not worth failing for.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::discovery::PeerSet;

    fn peer(last: u8) -> Peer {
        Peer {
            ip: std::net::IpAddr::from([10, 0, 0, last]),
            port: 1883,
            node: format!("emqx@10.0.0.{last}"),
        }
    }

    #[test]
    fn json_and_lines_forms() {
        let source = Source::new("emqx");
        source.publish(PeerSet {
            peers: vec![peer(6), peer(5)],
            refreshed: None,
            error: None,
        });
        assert_eq!(
            peers_json(&source),
            json!([
                {"address": "10.0.0.6", "port": 1883, "node": "emqx@10.0.0.6", "source": "emqx"},
                {"address": "10.0.0.5", "port": 1883, "node": "emqx@10.0.0.5", "source": "emqx"},
            ])
        );
        assert_eq!(
            peers_lines(&source.peers().peers),
            "emqx@10.0.0.5\nemqx@10.0.0.6\n"
        );
        assert_eq!(peers_lines(&[]), "");
    }

    #[test]
    fn writes_both_formats() {
        let dir = std::env::temp_dir().join(format!("brokerside-peers-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = dir.join("seeds");
        write_peers_file(&lines, PeersFileFormat::Lines, "emqx", &[peer(7), peer(5)]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&lines).unwrap(),
            "emqx@10.0.0.5\nemqx@10.0.0.7\n"
        );
        let json_file = dir.join("peers.json");
        write_peers_file(&json_file, PeersFileFormat::Json, "emqx", &[peer(5)]).unwrap();
        let parsed: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
        assert_eq!(
            parsed,
            json!([{"address": "10.0.0.5", "port": 1883, "node": "emqx@10.0.0.5", "source": "emqx"}])
        );
        // Only the two files: no temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A reader polling the file while it is rewritten many times always parses a whole file.
    #[test]
    fn a_polling_reader_never_sees_a_partial_file() {
        let dir = std::env::temp_dir().join(format!("brokerside-peers-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peers.json");
        write_peers_file(&path, PeersFileFormat::Json, "emqx", &[peer(1)]).unwrap();

        let done = Arc::new(AtomicBool::new(false));
        let reader = std::thread::spawn({
            let (path, done) = (path.clone(), Arc::clone(&done));
            move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).expect("the file is always there");
                    let parsed: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("partial file ({e}): {text:?}"));
                    let count = parsed.as_array().unwrap().len();
                    assert!((1..=200).contains(&count), "{count} peers");
                    reads += 1;
                }
                reads
            }
        });
        for round in 0..400u32 {
            // Sets of very different sizes, so a torn read would show.
            let size = if round % 2 == 0 {
                200
            } else {
                1 + (round % 7) as u8
            };
            let peers: Vec<Peer> = (1..=size).map(peer).collect();
            write_peers_file(&path, PeersFileFormat::Json, "emqx", &peers).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 10, "the reader only read {reads} times");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
