//! A moto server of our own on a free loopback port, stopped when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "moto did not listen on {addr} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
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
