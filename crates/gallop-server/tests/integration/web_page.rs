//! The web page at `/` in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver) against a gallop server on loopback. It signs in, uploads a generated image,
//! runs i2v on the preview engine and watches its progress change, sees the video play, opens
//! the history, sees a bad prompt's error beside the prompt, and runs r2v with three images.
//! Screenshots of each state go to `target/tmp/web-page/` (look at them after a change).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use image::ImageFormat;
use serde_json::{Value, json};

use crate::http_support::{TestServer, encode, picture};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{CHROMEDRIVER}: {e} (apt-get install -y chromium chromium-driver)")
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = crate::http_support::client();
        while client.get(format!("{url}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session plus where its screenshots go.
struct Browser {
    client: Client,
    driver_url: String,
    shots: PathBuf,
}

impl Browser {
    async fn open(driver: &Driver) -> Browser {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1500",
                         "--autoplay-policy=no-user-gesture-required"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver_url: driver.url.clone(),
            shots,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `script` until it returns true.
    async fn until(&self, what: &str, limit: Duration, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                self.shot("timeout").await;
                panic!(
                    "waited {limit:?} for {what}; page: {}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn page_text(&self) -> String {
        self.js("return document.body.innerText").await.to_string()
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        element.clear().await.unwrap();
        element.send_keys(text).await.unwrap();
    }

    /// The rendered text of the first element `css` matches, read in one script so a list the
    /// page re-renders meanwhile cannot leave a stale element behind.
    async fn text(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.innerText : null",
            json!(css)
        );
        match self.js(&script).await {
            Value::String(text) => text,
            other => panic!("{css}: no such element ({other})"),
        }
    }

    /// The browser's console and network log since the last call (chromedriver's log endpoint).
    async fn console(&self) -> Vec<Value> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let text = crate::http_support::client()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .header("content-type", "application/json")
            .body(json!({"type": "browser"}).to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap();
        answer["value"].as_array().cloned().unwrap_or_default()
    }
}

fn write_png(dir: &Path, name: &str, width: u32, height: u32, seed: u32) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        encode(&picture(width, height, seed), ImageFormat::Png),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// Waits for the result video to play: enough data to play (readyState >= 3) and its clock moving.
async fn assert_video_plays(browser: &Browser, css: &str) {
    browser
        .until(
            "the video to have data to play",
            Duration::from_secs(30),
            &format!("const v = document.querySelector('{css}'); return !!v && !v.hidden && v.readyState >= 3"),
        )
        .await;
    let t0 = browser
        .js(&format!(
            "const v = document.querySelector('{css}'); v.play(); return v.currentTime"
        ))
        .await
        .as_f64()
        .unwrap();
    browser
        .until(
            "the video's currentTime to advance",
            Duration::from_secs(10),
            &format!("return document.querySelector('{css}').currentTime > {t0} + 0.2"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_page_makes_videos_in_chromium() {
    let server = TestServer::start().await;
    let driver = Driver::start().await;
    let browser = Browser::open(&driver).await;
    let files = tempfile::tempdir().unwrap();
    let first = write_png(files.path(), "first.png", 640, 480, 1);

    // Sign in.
    browser.client.goto(&server.url("/")).await.unwrap();
    browser
        .until(
            "the sign-in form",
            Duration::from_secs(10),
            "return !document.getElementById('sign-in').hidden",
        )
        .await;
    assert_eq!(
        browser
            .js("return getComputedStyle(document.getElementById('sign-out')).display")
            .await,
        json!("none")
    );
    browser.shot("01-sign-in").await;
    // From the keyboard: the token, then Enter.
    browser
        .type_into("#token", &format!("{}\u{E007}", server.token))
        .await;
    browser
        .until(
            "the models",
            Duration::from_secs(10),
            "return document.querySelectorAll('#models .model').length == 2",
        )
        .await;
    let models = browser.text("#models").await;
    assert!(
        models.contains("alibaba/hh1-i2v") && models.contains("not the neural model"),
        "{models}"
    );
    assert_eq!(
        browser
            .js("return localStorage.getItem('gallop.token')")
            .await,
        json!(server.token)
    );
    browser.shot("02-signed-in").await;
    // The token is kept: a reload signs in by itself.
    browser.client.refresh().await.unwrap();
    browser
        .until(
            "signed in after a reload",
            Duration::from_secs(10),
            "return document.querySelectorAll('#models .model').length == 2",
        )
        .await;

    // Upload a generated image: it shows as "image 1" with its size once uploaded.
    browser
        .client
        .find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(&first)
        .await
        .unwrap();
    browser
        .until(
            "the upload",
            Duration::from_secs(20),
            "return document.querySelector('#thumbs .status')?.textContent == '640×480'",
        )
        .await;
    assert_eq!(browser.text("#thumbs .num").await, "image 1");

    // i2v, long enough (8 s of video) to see progress change on the preview engine.
    browser
        .type_into("#prompt", "A slow push-in on the hills")
        .await;
    assert_eq!(browser.text("#prompt-count").await, "27 / 2500");
    browser.type_into("#duration", "8").await;
    browser.shot("03-i2v-form").await;
    browser.click("#submit").await;
    browser
        .until(
            "the progress panel",
            Duration::from_secs(10),
            "return !document.getElementById('run').hidden",
        )
        .await;
    let mut steps = Vec::<String>::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while browser
        .js("return document.getElementById('result').hidden")
        .await
        == json!(true)
    {
        let step = browser.text("#run-step").await;
        if step.contains(" / ") && steps.last() != Some(&step) {
            steps.push(step);
            if steps.len() == 2 {
                browser.shot("04-progress").await;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job did not end; steps seen {steps:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(steps.len() >= 2, "progress did not change: {steps:?}");
    assert!(steps.iter().all(|s| s.ends_with("/ 192")), "{steps:?}");
    assert_video_plays(&browser, "#result-video").await;
    let params = browser.text("#params").await;
    assert!(
        params.contains("motion preview (not the neural model)"),
        "{params}"
    );
    let seed = params
        .lines()
        .skip_while(|l| !l.starts_with("Seed"))
        .find_map(|l| l.split_whitespace().last()?.parse::<u32>().ok());
    assert!(seed.is_some(), "the seed used is shown: {params}");
    let download = browser
        .js("return document.getElementById('download').href")
        .await;
    assert!(
        download.as_str().unwrap().contains("/v1/files/"),
        "{download}"
    );
    browser.shot("05-i2v-result").await;

    // History: newest first, the job with its state, model, input thumbnail and video.
    browser.click("#refresh").await;
    browser
        .until(
            "the history entry with its thumbnail",
            Duration::from_secs(10),
            "const j = document.querySelector('#jobs .job'); const img = j && j.querySelector('.inputs img'); \
             return !!img && img.complete && img.naturalWidth == 640 && !!j.querySelector('video')",
        )
        .await;
    let entry = browser.text("#jobs .job").await;
    assert!(
        entry.contains("completed") && entry.contains("alibaba/hh1-i2v") && entry.contains("8 s"),
        "{entry}"
    );
    browser
        .js("document.getElementById('history').scrollIntoView()")
        .await;
    browser.shot("06-history").await;

    // r2v with a bad prompt (over 2500 characters): the server's message shows beside the prompt.
    browser
        .click("input[name=model][value='alibaba/hh1.1-r2v']")
        .await;
    browser
        .js(
            "const p = document.getElementById('prompt'); p.value = 'x'.repeat(2501); \
             p.dispatchEvent(new Event('input'))",
        )
        .await;
    assert_eq!(browser.text("#prompt-count").await, "2501 / 2500");
    browser.click("#submit").await;
    browser
        .until(
            "the prompt's error",
            Duration::from_secs(10),
            "return document.querySelector('.error[data-for=prompt]').textContent.length > 0",
        )
        .await;
    let error = browser.text(".error[data-for=prompt]").await;
    assert!(
        error.contains("/input/prompt") && error.contains("2500"),
        "{error}"
    );
    browser
        .js("document.getElementById('create').scrollIntoView()")
        .await;
    browser.shot("07-bad-prompt").await;

    // r2v with three images: two more uploads, reordered, then the run.
    let second = write_png(files.path(), "second.png", 600, 600, 2);
    let third = write_png(files.path(), "third.png", 480, 640, 3);
    browser
        .client
        .find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(&format!("{second}\n{third}"))
        .await
        .unwrap();
    browser
        .until(
            "three uploaded images",
            Duration::from_secs(20),
            "const s = [...document.querySelectorAll('#thumbs .status')].map(x => x.textContent); \
             return s.length == 3 && !s.includes('uploading…')",
        )
        .await;
    browser
        .click("#thumbs li:first-child button[aria-label='move image 1 later']")
        .await;
    let order = browser
        .js("return [...document.querySelectorAll('#thumbs img')].map(i => i.alt)")
        .await;
    assert_eq!(
        order,
        json!([
            "image 1: second.png",
            "image 2: first.png",
            "image 3: third.png"
        ])
    );
    browser
        .type_into("#prompt", "image 1 waves at image 2 while image 3 watches")
        .await;
    browser.type_into("#duration", "3").await;
    browser
        .js("document.getElementById('ratio').value = '1:1'")
        .await;
    browser.shot("08-r2v-form").await;
    browser.click("#submit").await;
    browser
        .until(
            "the r2v result",
            Duration::from_secs(240),
            // The i2v result stays up until the new job is accepted: wait for the r2v one.
            "return !document.getElementById('result').hidden && \
             document.getElementById('params').innerText.includes('alibaba/hh1.1-r2v')",
        )
        .await;
    assert_video_plays(&browser, "#result-video").await;
    let params = browser.text("#params").await;
    assert!(
        params.contains("alibaba/hh1.1-r2v") && params.contains("image 3: gallop://uploads/"),
        "{params}"
    );
    assert!(params.contains("1:1"), "{params}");
    browser.shot("09-r2v-result").await;

    // A phone-sized screen: nothing wider than the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.js("window.scrollTo(0, 0)").await;
    browser
        .until(
            "the phone layout",
            Duration::from_secs(5),
            "return document.documentElement.scrollWidth <= window.innerWidth",
        )
        .await;
    browser.shot("10-phone").await;

    // No script errors; the only failed request is the refused bad prompt's 400.
    let log = browser.console().await;
    let severe: Vec<&Value> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
    for entry in &severe {
        let message = entry["message"].as_str().unwrap_or("");
        assert!(
            entry["source"] == "network" && message.contains("/v1/jobs") && message.contains("400"),
            "console error: {entry}"
        );
    }
    assert!(severe.len() <= 1, "{severe:?}");

    // Sign out: the token is forgotten and the form is back.
    browser.click("#sign-out").await;
    assert_eq!(
        browser
            .js("return localStorage.getItem('gallop.token')")
            .await,
        Value::Null
    );
    assert_eq!(
        browser
            .js("return document.getElementById('app').hidden")
            .await,
        json!(true)
    );

    browser.client.close().await.unwrap();
    server.server.shutdown().await;
}
