//! Where the binary's logs go: stderr for the server commands (`registry`, `gateway`,
//! `loadtest`), files under the data directory for `nacre up`, whose terminal shows only a short
//! status (`--verbose` adds the logs back to stderr).

use std::path::{Path, PathBuf};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Days of `nacre up` log files kept before the oldest is deleted.
const KEEP_DAYS: usize = 7;
/// Name parts of `nacre up`'s log files: `nacre.YYYY-MM-DD.log`.
const FILE_PREFIX: &str = "nacre";
const FILE_SUFFIX: &str = "log";

/// What is logged unless `NACRE_LOG` says otherwise. INFO, except:
/// - openraft's own INFO lines, which are per-RPC noise;
/// - pingora's connection pool, which logs "failed to acquire reusable stream" at ERROR when
///   a pooled upstream connection is still held by its idle watcher and a new one is opened
///   instead (~1,000 lines a minute under load, no request affected). Its other lines are
///   debug ones; the gateway reports upstream failures itself.
const DEFAULT_FILTER: &str = "info,openraft=warn,pingora_core::connectors=off";

/// `NACRE_LOG` if set, else [`DEFAULT_FILTER`].
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("NACRE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// A formatting layer writing to `writer`, in `format`.
fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    }
}

/// Server commands: every log line to stderr.
pub fn to_stderr(format: LogFormat) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(layer(format, std::io::stderr, ansi).with_filter(filter()))
        .init();
}

/// Where `nacre up` writes its logs; hold the guard until exit so buffered lines are flushed.
pub struct FileLogs {
    /// Today's file (a new one starts each day).
    pub current: PathBuf,
    _guard: WorkerGuard,
}

/// `nacre up`: every log line to daily files under `dir` (written off the async workers, by
/// tracing-appender's thread), and also to stderr when `verbose`.
pub fn to_files(format: LogFormat, dir: &Path, verbose: bool) -> std::io::Result<FileLogs> {
    std::fs::create_dir_all(dir)?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(FILE_PREFIX)
        .filename_suffix(FILE_SUFFIX)
        .max_log_files(KEEP_DAYS)
        .build(dir)
        .map_err(std::io::Error::other)?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let terminal = verbose.then(|| layer(format, std::io::stderr, ansi));
    tracing_subscriber::registry()
        .with(
            layer(format, writer, false)
                .and_then(terminal)
                .with_filter(filter()),
        )
        .init();
    Ok(FileLogs {
        current: newest_log(dir).unwrap_or_else(|| dir.to_path_buf()),
        _guard: guard,
    })
}

/// The most recently modified `nacre.*.log` in `dir`: the file the appender opened at build.
fn newest_log(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_is_well_formed() {
        // `EnvFilter::new` drops a directive it cannot parse without a word.
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }
}
