//! A moto server of our own on a free loopback port, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

/// `MOTO_SERVER` if set, else the `.venv` that `make venv` creates at the workspace root.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return path.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
}

impl Moto {
    pub fn start() -> Moto {
        let binary = moto_binary();
        assert!(binary.exists(), "{} not found: run `make venv` (or set MOTO_SERVER)", binary.display());
        // Port 0: moto binds a free port itself and says which. A port picked here and handed
        // over would be free for anyone until moto binds it, and two servers started at once
        // could get the same one: the loser exits, and its tests talk to the other's server.
        let mut child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let (found, port) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        // Reads moto's log to the end, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(port) = line.split("Running on http://127.0.0.1:").nth(1) {
                    let _ = found.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match port.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => port,
            other => panic!("moto did not say which port it listens on within 60 s: {other:?}"),
        };
        Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    /// SDK configuration pointing every client at this server, as `AWS_ENDPOINT_URL` would.
    pub fn sdk_config(&self) -> SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(Credentials::for_tests()))
            .build()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
