//! Log lines. JSON (the default unless stderr is a terminal) has the field names the Python
//! side uses: `timestamp` (RFC 3339, UTC), `level` (`debug`, `info`, `warning`, `error`),
//! `message`, then every field of the event and of the spans it happened in, flattened
//! (`correlation_id`, `client_order_id`, `account`, ... bound once per request by a span; see
//! `commands`). An event's own field wins over a span's of the same name.

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Changes the filter of the running subscriber (the runtime configuration's log level).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The running subscriber's filter setter and its start-up filter, once [`init`] ran.
static RELOAD: OnceLock<(SetFilter, String)> = OnceLock::new();

/// The start-up filter: `BRIDGE_LOG`, else `info`.
fn startup_filter() -> String {
    std::env::var("BRIDGE_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| "info".into())
}

/// Installs the global subscriber: `BRIDGE_LOG` filters (default `info`); `format` is "json"
/// or "text" (unset: JSON unless stderr is a terminal). Its filter can be replaced at run time
/// ([`set_level`]).
pub fn init(format: Option<&str>) {
    let startup = startup_filter();
    let filter = EnvFilter::new(&startup);
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    // The filter is reloadable ([`set_level`]); the reload layer wraps the formatter, so it
    // comes last.
    let set: SetFilter = if json {
        let builder = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    } else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    };
    let _ = RELOAD.set((set, startup));
}

/// Sets the level of every line from now on (`trace`, `debug`, `info`, `warn`, `error`), or,
/// `None`, puts the start-up filter back. An error when no subscriber was installed by
/// [`init`] or the level is not one.
pub fn set_level(level: Option<&str>) -> Result<(), String> {
    let Some((set, startup)) = RELOAD.get() else {
        return Err("no reloadable log subscriber installed".into());
    };
    let filter = EnvFilter::try_new(level.unwrap_or(startup)).map_err(|e| e.to_string())?;
    set(filter)
}

/// The level as the Python side spells it.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// One JSON object per event (see the module docs). Span fields must be recorded with
/// [`JsonFields`].
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<JsonFields>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(f.as_str()) {
                        fields.extend(m);
                    }
                }
            }
        }
        let mut visitor = Fields(&mut fields);
        event.record(&mut visitor);
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":");
        line.push_str(&Value::String(timestamp).to_string());
        line.push_str(",\"level\":\"");
        line.push_str(level_name(event.metadata().level()));
        line.push_str("\",\"message\":");
        line.push_str(&message.to_string());
        for (key, value) in &fields {
            if matches!(key.as_str(), "timestamp" | "level") || key.starts_with("log.") {
                continue;
            }
            line.push(',');
            line.push_str(&Value::String(key.clone()).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// Records an event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(emit: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_writer(move || out.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// The top-level keys and level names of the Python side; span fields flattened, the
    /// event's own fields beside them, no nested objects.
    #[test]
    fn flat_lines_with_shared_field_names() {
        let got = lines(|| {
            let span = tracing::info_span!(
                "request",
                correlation_id = "c-1",
                client_order_id = tracing::field::Empty
            );
            span.record("client_order_id", "ord-1");
            let _entered = span.enter();
            tracing::warn!(key = "ACC1.ord-1", retry_in_ms = 50u64, "retrying");
            tracing::info!(client_order_id = "override", "event wins");
            tracing::debug!("debug");
            tracing::error!("error");
        });
        assert_eq!(got.len(), 4);
        let first = got[0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        for k in [
            "timestamp",
            "level",
            "message",
            "correlation_id",
            "client_order_id",
            "key",
            "retry_in_ms",
        ] {
            assert!(keys.contains(&k), "{k} missing in {keys:?}");
        }
        assert!(!keys.contains(&"fields") && !keys.contains(&"span") && !keys.contains(&"spans"));
        assert_eq!(first["level"], "warning");
        assert_eq!(first["message"], "retrying");
        assert_eq!(first["correlation_id"], "c-1");
        assert_eq!(first["client_order_id"], "ord-1");
        assert_eq!(first["retry_in_ms"], 50);
        let ts = first["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
        assert_eq!(got[1]["client_order_id"], "override");
        assert_eq!(got[1]["level"], "info");
        assert_eq!(got[2]["level"], "debug");
        assert_eq!(got[3]["level"], "error");
    }

    /// Every line inside an order's span carries the ids the client's lines carry, under the
    /// same names: `correlation_id`, `trace_id`, `client_order_id`, `account`.
    #[test]
    fn order_lines_carry_the_shared_ids() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let trace = crate::trace::Trace::of(Some(&headers));
        let got = lines(|| {
            let span = crate::commands::order_span(&trace, "ACC1", "ord-1");
            span.in_scope(|| tracing::debug!(status = 1, "ack sent"));
        });
        let line = got[0].as_object().unwrap();
        for (key, want) in [
            ("correlation_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("client_order_id", "ord-1"),
            ("account", "ACC1"),
            // The sender's contract version (no Bridge-Schema-Version header: 1.0).
            ("schema_version", "1.0"),
            ("message", "ack sent"),
        ] {
            assert_eq!(line[key], want, "{key} in {line:?}");
        }
    }
}
