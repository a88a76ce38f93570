//! Spans of the `tracing` crate around publish, enqueue and claim (with the `tracing`
//! feature; without it they compile to nothing). Handler runs get theirs in middleware.rs.

/// An entered span, or nothing without the `tracing` feature.
pub(crate) struct Span(#[cfg(feature = "tracing")] pub(crate) tracing::span::EnteredSpan);

impl Span {
    /// Records an id learnt after the span began (a job's or event's id, a count).
    pub(crate) fn record(&self, field: &'static str, value: impl Into<i64>) {
        let value: i64 = value.into();
        #[cfg(feature = "tracing")]
        self.0.record(field, value);
        #[cfg(not(feature = "tracing"))]
        let _ = (field, value);
    }
}

/// `span!("name", field = value, ...)`: an entered info-level span. Fields to record later
/// are declared with `field = tracing::field::Empty` (write `field = empty`).
macro_rules! span {
    ($name:literal $(, $field:ident = $value:expr)* $(,)?) => {{
        #[cfg(feature = "tracing")]
        {
            #[allow(unused_imports)]
            use tracing::field::Empty as empty;
            $crate::trace::Span(tracing::info_span!($name $(, $field = $value)*).entered())
        }
        #[cfg(not(feature = "tracing"))]
        {
            $crate::trace::Span()
        }
    }};
}
pub(crate) use span;
