//! The progress bar on stderr while an archive is read (`inspect`, `verify --image`, `run`).

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use crate::inspect::{Progress, ReadProgress};

/// Archives smaller than this finish too fast for a progress bar to help.
const MIN_BYTES: u64 = 100_000_000;

/// A bar for reads of known length past [`MIN_BYTES`], when stderr is a terminal.
pub fn archive_bar() -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Some(Progress::new(move |step| {
        let Ok(mut bar) = bar.lock() else {
            return;
        };
        match step {
            ReadProgress::Started { total: Some(total) } if total >= MIN_BYTES => {
                *bar = Some(new_bar(total));
            }
            ReadProgress::Started { .. } => {}
            ReadProgress::Advanced { bytes } => {
                if let Some(bar) = bar.as_ref() {
                    bar.inc(bytes);
                }
            }
            ReadProgress::Finished => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }))
}

fn new_bar(length: u64) -> ProgressBar {
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message("reading archive");
    bar
}
