//! A real S3-compatible store for tests: Versity S3 Gateway (Apache-2.0) with its POSIX backend,
//! listening on 127.0.0.1 (or the address given) with fixed credentials, so SigV4 is enforced on
//! every request.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::error::{Error, IoContext, Result};
use crate::process::{CommandOutput, free_port, log_tail, run};
use crate::tools::tool;
use crate::wait::wait_for;

/// The access key the store accepts.
pub const ACCESS_KEY: &str = "edgefleet-test";
/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "edgefleet-test-secret-key-0123456789";
/// The region the store answers for (versitygw's default).
pub const REGION: &str = "us-east-1";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Another process may grab the free port between our probe and the server's bind.
const START_ATTEMPTS: usize = 3;

/// A running S3 store; it is killed and its data removed on drop.
#[derive(Debug)]
pub struct S3Server {
    // Field order matters: the process dies before its data directory is removed.
    child: Child,
    ip: IpAddr,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl S3Server {
    /// Starts the store on a free port of 127.0.0.1 and waits until it accepts connections.
    pub async fn start() -> Result<S3Server> {
        Self::start_on(IpAddr::from([127, 0, 0, 1])).await
    }

    /// Starts the store on a free port of `ip` (e.g. the cluster's host address, which edges on
    /// real nodes reach) and waits until it accepts connections.
    pub async fn start_on(ip: IpAddr) -> Result<S3Server> {
        let binary = tool("versitygw").await?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&binary, ip).await {
                Ok(server) => return Ok(server),
                Err(error @ Error::ProcessExited { .. }) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Invalid {
            what: "S3 store start-up".to_owned(),
            reason: "no attempt was made".to_owned(),
        }))
    }

    async fn start_once(binary: &Path, ip: IpAddr) -> Result<S3Server> {
        let dir = tempfile::Builder::new()
            .prefix("edgefleet-s3-")
            .tempdir()
            .context(|| "cannot create the S3 data directory".to_owned())?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).context(|| format!("cannot create {}", data.display()))?;
        let log = dir.path().join("versitygw.log");
        let log_file = std::fs::File::create(&log).context(|| format!("cannot create {}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .context(|| format!("cannot reopen {}", log.display()))?;
        let port = free_port()?;

        let mut command = Command::new(binary);
        command
            .arg("--port")
            .arg(std::net::SocketAddr::new(ip, port).to_string())
            .arg("--region")
            .arg(REGION)
            .arg("posix")
            .arg(&data)
            .env("ROOT_ACCESS_KEY", ACCESS_KEY)
            .env("ROOT_SECRET_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .context(|| format!("cannot start {}", binary.display()))?;
        let mut server = S3Server {
            child,
            ip,
            port,
            log,
            dir,
        };
        server.wait_until_listening().await?;
        Ok(server)
    }

    async fn wait_until_listening(&mut self) -> Result<()> {
        let address = std::net::SocketAddr::new(self.ip, self.port);
        let (child, log) = (&mut self.child, &self.log);
        wait_for("the S3 store to listen", STARTUP_TIMEOUT, || {
            let exited = match child.try_wait() {
                Ok(Some(status)) => Err(Error::ProcessExited {
                    process: "versitygw".to_owned(),
                    status,
                    log: log.clone(),
                    tail: log_tail(log, 20),
                }),
                Ok(None) => Ok(()),
                Err(source) => Err(Error::Io {
                    context: "cannot poll versitygw".to_owned(),
                    source,
                }),
            };
            async move {
                exited?;
                Ok(TcpStream::connect(&address).await.ok().map(drop))
            }
        })
        .await
    }

    /// `http://<ip>:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", std::net::SocketAddr::new(self.ip, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the store keeps its objects (bucket = directory).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The store's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Runs the AWS CLI against this store with the store's credentials.
    pub async fn aws(&self, args: &[&str]) -> Result<CommandOutput> {
        self.aws_as(ACCESS_KEY, SECRET_KEY, args).await
    }

    /// Runs the AWS CLI against this store with the given credentials (e.g. wrong ones).
    pub async fn aws_as(&self, access_key: &str, secret_key: &str, args: &[&str]) -> Result<CommandOutput> {
        let mut command = Command::new("aws");
        command
            .arg("--endpoint-url")
            .arg(self.endpoint())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret_key)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_REGION", REGION)
            // Only what is set here counts: no profile, no instance metadata lookups.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        run(command, None).await
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.aws(&["s3api", "create-bucket", "--bucket", bucket])
            .await?
            .ok()
            .map(drop)
    }
}
