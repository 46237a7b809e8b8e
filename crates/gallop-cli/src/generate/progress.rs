//! How far a render has got: a bar on a terminal; elsewhere (a log file, CI, a pipe) a plain
//! line every few seconds, since a bar's redraws would fill a log with carriage returns.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use gallop_engine::Progress;

/// Time between progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub(super) enum Reporter {
    Bar(indicatif::ProgressBar),
    Lines {
        start: Instant,
        /// When the last line was printed, and what it said.
        printed: Option<(Instant, Progress)>,
        latest: Option<Progress>,
    },
}

impl Reporter {
    pub(super) fn new() -> Reporter {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps, {elapsed} (eta {eta})",
                )
                .expect("the template is valid"),
            );
            Reporter::Bar(bar)
        } else {
            Reporter::Lines {
                start: Instant::now(),
                printed: None,
                latest: None,
            }
        }
    }

    pub(super) fn report(&mut self, p: Progress) {
        match self {
            Reporter::Bar(bar) => {
                bar.set_length(p.total.into());
                bar.set_position(p.step.into());
            }
            Reporter::Lines {
                start,
                printed,
                latest,
            } => {
                *latest = Some(p);
                // The first report says the run began; then one line per interval.
                if printed.is_none_or(|(t, _)| t.elapsed() >= LINE_EVERY) {
                    *printed = Some((Instant::now(), p));
                    eprintln!("{}", line(p, start.elapsed()));
                }
            }
        }
    }

    /// Clears the bar, or prints the count reached unless the last line already said it.
    pub(super) fn finish(&mut self) {
        match self {
            Reporter::Bar(bar) => bar.finish_and_clear(),
            Reporter::Lines {
                start,
                printed,
                latest: Some(p),
            } if printed.is_none_or(|(_, shown)| shown != *p) => {
                eprintln!("{}", line(*p, start.elapsed()));
                *printed = Some((Instant::now(), *p));
            }
            Reporter::Lines { .. } => {}
        }
    }
}

/// `progress: 30/72 steps (41%), 2 s elapsed, about 3 s left`.
fn line(p: Progress, elapsed: Duration) -> String {
    let percent = if p.total == 0 {
        0
    } else {
        100 * p.step as u64 / p.total as u64
    };
    let mut text = format!(
        "progress: {}/{} steps ({percent}%), {} s elapsed",
        p.step,
        p.total,
        elapsed.as_secs()
    );
    if p.step > 0 && p.step < p.total {
        let left = elapsed.mul_f64((p.total - p.step) as f64 / p.step as f64);
        text.push_str(&format!(", about {} s left", left.as_secs()));
    }
    text
}
