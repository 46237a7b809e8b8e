//! `gallop models pull REPO`: download a checkpoint from the Hugging Face Hub (or a mirror) over
//! its plain file routes: `GET /api/models/{repo}` (or `.../revision/{rev}`) lists the files
//! (`siblings`),
//! `GET /{repo}/resolve/{rev}/{file}` serves each. Downloads go to `FILE.part` and resume from
//! its length with a `Range` request, so an interrupted pull continues where it stopped.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Download every file of a model repository, e.g. Wan-AI/Wan2.2-TI2V-5B-Diffusers.
    Pull(PullArgs),
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// owner/name on the Hub.
    repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Where the checkpoint goes (default: models/OWNER/NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Hub address; HF_ENDPOINT when set, else https://huggingface.co.
    #[arg(long)]
    endpoint: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Pull(pull) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_pull(pull))
        }
    }
}

async fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    ensure!(
        args.repo.split('/').count() == 2 && args.repo.split('/').all(|p| !p.is_empty()),
        "REPO must be owner/name, got {:?}",
        args.repo
    );
    let endpoint = args
        .endpoint
        .or_else(|| std::env::var("HF_ENDPOINT").ok())
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let endpoint = endpoint.trim_end_matches('/');
    let dir = args
        .dir
        .unwrap_or_else(|| Path::new("models").join(&args.repo));
    let client = Hub {
        http: reqwest::Client::builder().build()?,
        endpoint: endpoint.to_string(),
        token: std::env::var("HF_TOKEN").ok(),
    };
    let files = client.list_files(&args.repo, &args.revision).await?;
    println!("{} files in {}@{}", files.len(), args.repo, args.revision);
    for file in &files {
        client
            .download(&args.repo, &args.revision, file, &dir)
            .await
            .with_context(|| format!("downloading {file}"))?;
    }
    println!("pulled {} into {}", args.repo, dir.display());
    Ok(())
}

struct Hub {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

impl Hub {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The repository's file names at `revision`.
    async fn list_files(&self, repo: &str, revision: &str) -> anyhow::Result<Vec<String>> {
        let url = match revision {
            "main" => format!("{}/api/models/{repo}", self.endpoint),
            _ => format!("{}/api/models/{repo}/revision/{revision}", self.endpoint),
        };
        let response = self
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "GET {url}: {status} (is the repository name right, and HF_TOKEN set if it is gated?)"
            );
        }
        let body = response
            .bytes()
            .await
            .with_context(|| format!("GET {url}: reading the answer"))?;
        let info: serde_json::Value =
            serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
        let siblings = info["siblings"]
            .as_array()
            .with_context(|| format!("GET {url}: the answer has no `siblings` list"))?;
        let mut files = Vec::new();
        for sibling in siblings {
            let name = sibling["rfilename"]
                .as_str()
                .with_context(|| format!("GET {url}: a sibling has no `rfilename`"))?;
            // Never write outside the target directory.
            ensure!(
                !name.starts_with('/') && !name.split('/').any(|p| p == ".." || p.is_empty()),
                "GET {url}: unsafe file name {name:?}"
            );
            files.push(name.to_string());
        }
        Ok(files)
    }

    /// Download one file to `dir/file`, resuming `dir/file.part` when present.
    async fn download(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        dir: &Path,
    ) -> anyhow::Result<()> {
        let dest = dir.join(file);
        if dest.exists() {
            println!("{file}: already here");
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let part = PathBuf::from(format!("{}.part", dest.display()));
        let have = tokio::fs::metadata(&part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let url = format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint);
        let mut request = self.get(&url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let (mut out, start) = match status.as_u16() {
            206 => {
                let f = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(&part)
                    .await?;
                (f, have)
            }
            200 => (tokio::fs::File::create(&part).await?, 0),
            // The part is already whole: the server has nothing past it.
            416 if have > 0 => {
                tokio::fs::rename(&part, &dest).await?;
                return Ok(());
            }
            _ => bail!("GET {url}: {status}"),
        };
        let total = response.content_length().map(|n| n + start);
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})",
                )
                .expect("the template is valid"),
            );
            bar.set_message(file.to_string());
            bar.set_position(start);
            bar
        });
        let mut stream = response.bytes_stream();
        let mut written = start;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .with_context(|| format!("GET {url}: connection lost; run again to resume"))?;
            out.write_all(&chunk).await?;
            written += chunk.len() as u64;
            if let Some(bar) = &bar {
                bar.set_position(written);
            }
        }
        out.flush().await?;
        drop(out);
        if let Some(total) = total {
            ensure!(
                written == total,
                "GET {url}: got {written} of {total} bytes; run again to resume"
            );
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        tokio::fs::rename(&part, &dest)
            .await
            .with_context(|| format!("moving {} into place", part.display()))?;
        println!(
            "{file}: {written} bytes{}",
            if start > 0 {
                format!(" (resumed at {start})")
            } else {
                String::new()
            }
        );
        Ok(())
    }
}
