//! [`Payload`]: the body of a notification, an event or a job, and [`ToPayload`], what
//! [`notify`](crate::Broker::notify), [`publish`](crate::Broker::publish) and
//! [`enqueue`](crate::Broker::enqueue) accept for it.
//!
//! One rule for all three: a JSON value is the value, text is the payload's text exactly as
//! given. Notifications carry text, so they send it as is (a JSON value as its JSON text);
//! events and jobs are stored as JSON, so their text must be JSON, checked before anything is
//! written ([`ErrorKind::Serialize`] when it is not).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::{Error, ErrorKind, Result};

/// The body of a notification, an event or a job: a JSON value, or text.
///
/// Usually built for you from what you pass ([`ToPayload`]): a `&serde_json::Value`, a
/// `&str` or `String`, or any `Serialize` type wrapped in [`Json`]. Build one yourself to check
/// JSON text once, up front ([`Payload::raw_json`]).
///
/// # Examples
///
/// ```no_run
/// use std::collections::BTreeMap;
/// use pgbroker::{Json, Payload};
/// use serde_json::json;
///
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// // The same argument types for all three calls.
/// broker.notify("orders", &json!({"id": 1}))?;
/// broker.publish("orders.created", &json!({"id": 1}))?;
/// broker.enqueue("invoices", &json!({"id": 1}))?;
///
/// let order = BTreeMap::from([("id", 2)]); // or any type that derives Serialize
/// broker.publish("orders.created", &Json(&order))?;
/// broker.enqueue("invoices", &Payload::raw_json(r#"{"id": 3}"#)?)?;
/// broker.notify("chat", "plain text")?; // text is sent as is...
/// assert!(broker.enqueue("invoices", "plain text").is_err()); // ...and must be JSON here
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Payload<'a> {
    repr: Repr<'a>,
}

#[derive(Debug, Clone, PartialEq)]
enum Repr<'a> {
    /// A JSON value.
    Value(Cow<'a, Value>),
    /// Text as given, not checked: events and jobs parse it as JSON.
    Text(Cow<'a, str>),
    /// JSON text, checked: notifications send the text as given, events and jobs the value.
    RawJson(Cow<'a, str>, Value),
}

impl<'a> Payload<'a> {
    /// A payload of JSON text, checked now: [`ErrorKind::Serialize`] when it is not JSON.
    /// Notifications send the text exactly as given; events and jobs store its value.
    ///
    /// # Examples
    ///
    /// ```
    /// use pgbroker::{ErrorKind, Payload};
    /// assert!(Payload::raw_json(r#"{"id": 1}"#).is_ok());
    /// assert_eq!(Payload::raw_json("{id: 1}").unwrap_err().kind(), ErrorKind::Serialize);
    /// ```
    pub fn raw_json(text: impl Into<Cow<'a, str>>) -> Result<Payload<'a>> {
        let text = text.into();
        let value = parse(&text)?;
        Ok(Payload {
            repr: Repr::RawJson(text, value),
        })
    }

    /// A payload of text, exactly as given: what a `&str` or `String` argument means.
    /// Notifications send it as is; events and jobs require it to be JSON (checked when they
    /// are written, with [`ErrorKind::Serialize`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = pgbroker::Payload::text("42 shipped");
    /// assert_eq!(p.as_text().unwrap(), "42 shipped");
    /// ```
    pub fn text(text: impl Into<Cow<'a, str>>) -> Payload<'a> {
        Payload {
            repr: Repr::Text(text.into()),
        }
    }

    /// A payload of a borrowed JSON value: what a `&serde_json::Value` argument means (an
    /// owned one converts with `Payload::from(value)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = serde_json::json!({"id": 1});
    /// let p = pgbroker::Payload::json(&v);
    /// assert_eq!(p.as_text().unwrap(), r#"{"id":1}"#);
    /// ```
    pub fn json(value: &'a Value) -> Payload<'a> {
        Payload {
            repr: Repr::Value(Cow::Borrowed(value)),
        }
    }

    /// A payload of any `Serialize` value, serialized now ([`ErrorKind::Serialize`] when
    /// serde fails, e.g. a map with non-string keys).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = pgbroker::Payload::serialize(&vec![1, 2, 3]).unwrap();
    /// assert_eq!(p.as_text().unwrap(), "[1,2,3]");
    /// ```
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> Result<Payload<'static>> {
        Ok(Payload::from(serde_json::to_value(value)?))
    }

    /// The payload's text: what a notification sends (a JSON value as compact JSON text).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = pgbroker::Payload::raw_json(r#"{ "id": 1 }"#).unwrap();
    /// assert_eq!(p.as_text().unwrap(), r#"{ "id": 1 }"#); // as given
    /// ```
    pub fn as_text(&self) -> Result<Cow<'_, str>> {
        match &self.repr {
            Repr::Value(v) => Ok(Cow::Owned(serde_json::to_string(v.as_ref())?)),
            Repr::Text(t) | Repr::RawJson(t, _) => Ok(Cow::Borrowed(t.as_ref())),
        }
    }

    /// The payload's JSON value: what an event or a job stores. [`ErrorKind::Serialize`]
    /// for text that is not JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// use pgbroker::{ErrorKind, Payload};
    /// assert_eq!(Payload::text("[1]").as_json().unwrap().as_ref(), &serde_json::json!([1]));
    /// assert_eq!(Payload::text("hi").as_json().unwrap_err().kind(), ErrorKind::Serialize);
    /// ```
    pub fn as_json(&self) -> Result<Cow<'_, Value>> {
        match &self.repr {
            Repr::Value(v) => Ok(Cow::Borrowed(v.as_ref())),
            Repr::RawJson(_, v) => Ok(Cow::Borrowed(v)),
            Repr::Text(t) => parse(t).map(Cow::Owned),
        }
    }

    /// The payload's JSON value, owned: no copy when the payload owns one.
    /// [`ErrorKind::Serialize`] for text that is not JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = pgbroker::Payload::text("[1, 2]").into_json().unwrap();
    /// assert_eq!(v, serde_json::json!([1, 2]));
    /// ```
    pub fn into_json(self) -> Result<Value> {
        match self.repr {
            Repr::Value(v) => Ok(v.into_owned()),
            Repr::RawJson(_, v) => Ok(v),
            Repr::Text(t) => parse(&t),
        }
    }

    /// The same payload, borrowing from this one.
    fn reborrow(&self) -> Payload<'_> {
        let repr = match &self.repr {
            Repr::Value(v) => Repr::Value(Cow::Borrowed(v.as_ref())),
            Repr::Text(t) => Repr::Text(Cow::Borrowed(t.as_ref())),
            Repr::RawJson(t, v) => Repr::RawJson(Cow::Borrowed(t.as_ref()), v.clone()),
        };
        Payload { repr }
    }
}

impl From<Value> for Payload<'static> {
    fn from(value: Value) -> Payload<'static> {
        Payload {
            repr: Repr::Value(Cow::Owned(value)),
        }
    }
}

impl<'a> From<&'a Value> for Payload<'a> {
    fn from(value: &'a Value) -> Payload<'a> {
        Payload::json(value)
    }
}

fn parse(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::with_cause(
            ErrorKind::Serialize,
            Some("payload is not valid JSON".into()),
            e,
        )
    })
}

/// What [`notify`](crate::Broker::notify), [`publish`](crate::Broker::publish),
/// [`enqueue`](crate::Broker::enqueue) and [`Job::new`](crate::queue::Job::new) accept a
/// reference to as a payload, and [`NewEvent::new`](crate::topic::NewEvent::new) the value
/// itself: a `serde_json::Value`, text (`str`, `String`: the payload's text as given), a
/// [`Payload`], or any `Serialize` value wrapped in [`Json`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// fn announce<P>(broker: &pgbroker::Broker, body: &P) -> pgbroker::Result<()>
/// where
///     P: pgbroker::ToPayload + ?Sized,
/// {
///     broker.notify("announcements", body)
/// }
/// announce(&broker, "hello")?;
/// announce(&broker, &serde_json::json!({"hello": "world"}))?;
/// # Ok(()) }
/// ```
pub trait ToPayload {
    /// The payload, borrowing from `self` where it can; fails with [`ErrorKind::Serialize`]
    /// when a value cannot be serialized.
    fn to_payload(&self) -> Result<Payload<'_>>;

    /// The payload's JSON value, taken without a copy where `self` owns one (what
    /// [`NewEvent::new`](crate::topic::NewEvent::new) and [`Job::new`](crate::queue::Job::new)
    /// keep). [`ErrorKind::Serialize`] for text that is not JSON.
    fn into_json_value(self) -> Result<Value>
    where
        Self: Sized,
    {
        self.to_payload()?.into_json()
    }
}

impl ToPayload for Value {
    fn to_payload(&self) -> Result<Payload<'_>> {
        Ok(Payload::json(self))
    }

    fn into_json_value(self) -> Result<Value> {
        Ok(self)
    }
}

impl ToPayload for str {
    fn to_payload(&self) -> Result<Payload<'_>> {
        Ok(Payload::text(self))
    }
}

impl ToPayload for String {
    fn to_payload(&self) -> Result<Payload<'_>> {
        Ok(Payload::text(self.as_str()))
    }
}

impl ToPayload for Payload<'_> {
    fn to_payload(&self) -> Result<Payload<'_>> {
        Ok(self.reborrow())
    }
}

impl<T: ToPayload + ?Sized> ToPayload for &T {
    fn to_payload(&self) -> Result<Payload<'_>> {
        (**self).to_payload()
    }
}

/// Any `Serialize` value as a JSON payload, serialized when it is sent.
///
/// # Examples
///
/// ```no_run
/// use pgbroker::Json;
///
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// // Any Serialize value: a type of yours with #[derive(Serialize)], a map, a tuple...
/// broker.enqueue("emails", &Json(("a@example.com", "welcome")))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> ToPayload for Json<T> {
    fn to_payload(&self) -> Result<Payload<'_>> {
        Payload::serialize(&self.0)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_meaning_for_every_argument() {
        let v = json!({"a": [1, "x"]});
        let p = v.to_payload().unwrap();
        assert_eq!(p.as_text().unwrap(), r#"{"a":[1,"x"]}"#);
        assert_eq!(p.as_json().unwrap().as_ref(), &v);

        let p = "not json".to_payload().unwrap();
        assert_eq!(p.as_text().unwrap(), "not json");
        assert_eq!(p.as_json().unwrap_err().kind(), ErrorKind::Serialize);

        let p = String::from(" [1] ")
            .to_payload()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(p, json!([1]));

        let p = Json(&std::collections::BTreeMap::from([("k", 1)]));
        assert_eq!(
            p.to_payload().unwrap().into_json().unwrap(),
            json!({"k": 1})
        );

        let raw = Payload::raw_json("{ \"k\" : 1 }").unwrap();
        assert_eq!(
            raw.to_payload().unwrap().as_text().unwrap(),
            "{ \"k\" : 1 }"
        );
        assert_eq!(raw.as_json().unwrap().as_ref(), &json!({"k": 1}));
        assert_eq!(
            Payload::raw_json("{").unwrap_err().kind(),
            ErrorKind::Serialize
        );
    }

    #[test]
    fn unserializable_values_are_a_serialize_error() {
        let bad = std::collections::HashMap::from([((1, 2), 3)]);
        assert_eq!(
            Json(&bad).to_payload().unwrap_err().kind(),
            ErrorKind::Serialize
        );
    }
}
