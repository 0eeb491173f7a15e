//! The real binaries, run as Lambda runs them: a stand-in for the Lambda Runtime API on a
//! loopback port, and each function's process started with the environment `template.yaml`
//! gives it (parameters at their defaults, queue references resolved to this account's
//! queues) plus the variables Lambda itself sets.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_yaml::Value as Yaml;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<String, String>>;

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<(String, Reply)>>,
    pending: Mutex<HashMap<String, Reply>>,
    init_error: Mutex<Option<String>>,
    next_id: Mutex<u64>,
}

/// One function: its process and the Runtime API it polls.
pub struct Lambda {
    pub name: String,
    sender: mpsc::Sender<(String, Reply)>,
    shared: Arc<Shared>,
    child: Child,
    pub log: PathBuf,
}

impl Lambda {
    /// Starts `binary` against a fresh Runtime API with `env` (and nothing else of ours).
    pub async fn start(name: &str, binary: &PathBuf, env: &BTreeMap<String, String>) -> Lambda {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind runtime API");
        let addr = listener.local_addr().expect("address");
        let (sender, receiver) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(receiver),
            pending: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            next_id: Mutex::new(0),
        });
        let serving = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, serving.clone()));
            }
        });
        let log = std::env::temp_dir().join(format!("asg-optimizer-{name}-{}.log", addr.port()));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .env_clear()
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Lambda { name: name.into(), sender, shared, child, log }
    }

    /// One invocation: the event goes out on the next `/invocation/next`, the answer comes back
    /// on `/response` (Ok) or `/error` (Err).
    pub async fn invoke(&mut self, event: &serde_json::Value) -> Result<serde_json::Value, String> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((event.to_string(), reply)).await.expect("runtime API is up");
        let answer = tokio::time::timeout(Duration::from_secs(120), answer).await;
        if let Some(e) = self.shared.init_error.lock().expect("lock").clone() {
            panic!("{} failed to initialise: {e}", self.name);
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited with {status}; log: {}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let body = answer.expect("an answer within 120 s").expect("the runtime API kept the reply")?;
        Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)))
    }

    /// Peak resident memory of the process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One HTTP/1.1 request, as much of it as the stand-ins here need.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Reads the next request of a keep-alive connection; `None` when the peer closed it.
pub async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':').unwrap_or((header, ""));
        headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
    }
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(stream).await
    } else {
        read_exact(stream, headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)).await
    };
    Some(Request { method, path, headers, body })
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut stream = BufReader::new(stream);
    while let Some(Request { method, path, body, .. }) = read_request(&mut stream).await {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let response = match (method.as_str(), segments.as_slice()) {
            ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => {
                let Some((event, reply)) = shared.queue.lock().await.recv().await else { return };
                let id = {
                    let mut n = shared.next_id.lock().expect("lock");
                    *n += 1;
                    format!("00000000-0000-0000-0000-{:012}", *n)
                };
                shared.pending.lock().expect("lock").insert(id.clone(), reply);
                let deadline = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() + 60_000)
                    .unwrap_or_default();
                let headers = format!(
                    "Lambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                     Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:test\r\n\
                     Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n"
                );
                http(200, &headers, &event)
            }
            ("POST", ["2018-06-01", "runtime", "invocation", id, outcome]) => {
                if let Some(reply) = shared.pending.lock().expect("lock").remove(*id) {
                    let _ = reply.send(if *outcome == "response" { Ok(body) } else { Err(body) });
                }
                http(202, "", r#"{"status":"OK"}"#)
            }
            ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
                *shared.init_error.lock().expect("lock") = Some(body);
                http(202, "", r#"{"status":"OK"}"#)
            }
            _ => http(404, "", "{}"),
        };
        if stream.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_exact(stream: &mut BufReader<TcpStream>, length: usize) -> String {
    let mut buf = vec![0; length];
    let _ = stream.read_exact(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

async fn read_chunked(stream: &mut BufReader<TcpStream>) -> String {
    let mut body = String::new();
    loop {
        let mut size = String::new();
        stream.read_line(&mut size).await.unwrap_or(0);
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let chunk = read_exact(stream, n + 2).await;
        if n == 0 {
            return body;
        }
        body.push_str(&chunk[..n.min(chunk.len())]);
    }
}

pub fn http(status: u16, headers: &str, body: &str) -> String {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        _ => "Not Found",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
}

/// What `template.yaml` says of one function: its binary and its environment, with `!Ref`s to
/// parameters resolved to `parameters` or their defaults, and other `!Ref`s by `resolve`.
pub struct TemplateFunction {
    pub binary: String,
    pub environment: BTreeMap<String, String>,
}

pub fn template_function(
    logical_id: &str,
    parameters: &[(&str, &str)],
    resolve: impl Fn(&str) -> Option<String>,
) -> TemplateFunction {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let template: Yaml = serde_yaml::from_str(&std::fs::read_to_string(&path).expect("template.yaml")).expect("YAML");
    let mut defaults: BTreeMap<String, String> = template["Parameters"]
        .as_mapping()
        .expect("Parameters")
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(&v["Default"])?)))
        .collect();
    for (k, v) in parameters {
        assert!(defaults.contains_key(*k), "template.yaml has no parameter {k}");
        defaults.insert(k.to_string(), v.to_string());
    }
    let value = |v: &Yaml| -> String {
        if let Some(s) = scalar(v) {
            return s;
        }
        match v {
            Yaml::Tagged(t) if t.tag == "!Ref" => {
                let name = scalar(&t.value).expect("!Ref name");
                defaults
                    .get(&name)
                    .cloned()
                    .or_else(|| resolve(&name))
                    .unwrap_or_else(|| panic!("cannot resolve !Ref {name}"))
            }
            other => panic!("unsupported environment value in template.yaml: {other:?}"),
        }
    };
    let function = &template["Resources"][logical_id];
    let mut environment = BTreeMap::new();
    for vars in [
        &template["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        for (k, v) in vars.as_mapping().into_iter().flatten() {
            environment.insert(k.as_str().expect("variable name").to_string(), value(v));
        }
    }
    let binary = scalar(&function["Metadata"]["BuildProperties"]["Binary"]).expect("BuildProperties.Binary");
    TemplateFunction { binary, environment }
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Builds the three binaries (debug) with the cargo running the tests, and returns where they are.
pub fn build_binaries() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // The whole workspace, as `make test` builds it before the tests: the same features are
    // unified, so this finds everything built already. Building only the four function packages
    // would unify fewer features and compile the SDK's crates a second time.
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--workspace", "--bins"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of the function binaries failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    target.join("debug")
}
