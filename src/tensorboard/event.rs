//! The `Event` and `Summary` messages of an event file, with the field numbers of TensorFlow's
//! `event.proto`, `summary.proto`, `tensor.proto` and `tensor_shape.proto` (as TensorBoard
//! vendors them in `tensorboard/compat/proto/`): encoded with [`crate::proto::Writer`] and
//! decoded back with [`crate::proto::fields`].
//!
//! What ablate writes: the first event of a file names the file format (`brain.Event:2`, which
//! tells TensorBoard to purge nothing on out-of-order steps); every other event holds one
//! `Summary` of scalars (`simple_value`, a float32), texts (a string tensor of the `text`
//! plugin) or plugin records (an empty float tensor whose metadata carries the plugin's
//! content, as the HParams plugin's own writer does).

use crate::proto::{fields, DecodeError, FieldValue, Writer};

/// The file format version of the first event: TensorBoard purges data after a restart only on
/// `SessionLog.START` events for this version (ablate writes none), never because of the order
/// of steps.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `DataType` values of `types.proto`.
const DT_FLOAT: i64 = 1;
const DT_STRING: i64 = 7;

/// `SummaryMetadata.DataClass` values of `summary.proto`.
const DATA_CLASS_SCALAR: i64 = 1;
const DATA_CLASS_TENSOR: i64 = 2;

/// One value of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub tag: String,
    pub data: Data,
    /// What TensorBoard shows as the tag's description (the first one per tag and run counts).
    pub description: Option<String>,
}

/// A value's data.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A scalar (`simple_value`): float32, as TensorBoard stores every scalar.
    Scalar(f32),
    /// A Markdown text of the `text` plugin.
    Text(String),
    /// A record of plugin `plugin` (its name) with `content` (its serialised plugin data).
    Plugin {
        plugin: &'static str,
        content: Vec<u8>,
    },
}

impl Value {
    pub fn scalar(tag: impl Into<String>, value: f32) -> Self {
        Self {
            tag: tag.into(),
            data: Data::Scalar(value),
            description: None,
        }
    }

    pub fn text(tag: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            tag: tag.into(),
            data: Data::Text(text.into()),
            description: None,
        }
    }

    pub fn plugin(tag: impl Into<String>, plugin: &'static str, content: Vec<u8>) -> Self {
        Self {
            tag: tag.into(),
            data: Data::Plugin { plugin, content },
            description: None,
        }
    }

    pub fn described(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// `Summary.Value`: tag 1, simple_value 2, tensor 8, metadata 9.
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.tag);
        match &self.data {
            Data::Scalar(v) => {
                if let Some(d) = &self.description {
                    let scalars = Some(("scalars", &[][..]));
                    w.message(9, |m| metadata(m, scalars, DATA_CLASS_SCALAR, Some(d)));
                }
                w.float(2, *v);
            }
            Data::Text(text) => {
                let d = self.description.as_deref();
                w.message(9, |m| {
                    metadata(m, Some(("text", &[])), DATA_CLASS_TENSOR, d)
                });
                // TensorProto: dtype 1, tensor_shape 2 (a scalar: no dims), string_val 8.
                w.message(8, |t| {
                    t.int64(1, DT_STRING);
                    t.message(2, |_| {});
                    t.bytes(8, text.as_bytes());
                });
            }
            Data::Plugin { plugin, content } => {
                let d = self.description.as_deref();
                w.message(9, |m| {
                    metadata(m, Some((plugin, content)), DATA_CLASS_TENSOR, d)
                });
                // An empty float vector: TensorShapeProto.dim 2 { size 1: 0 }.
                w.message(8, |t| {
                    t.int64(1, DT_FLOAT);
                    t.message(2, |s| s.message(2, |d| d.int64(1, 0)));
                });
            }
        }
    }
}

/// `SummaryMetadata`: plugin_data 1 { plugin_name 1, content 2 }, summary_description 3,
/// data_class 4. The `scalars` and `text` plugins' data at version 0 is the empty message.
fn metadata(
    m: &mut Writer,
    plugin: Option<(&str, &[u8])>,
    data_class: i64,
    description: Option<&str>,
) {
    if let Some((name, content)) = plugin {
        m.message(1, |p| {
            p.string(1, name);
            p.bytes(2, content);
        });
    }
    if let Some(d) = description {
        m.string(3, d);
    }
    m.int64(4, data_class);
}

/// One event: what happened at training step `step` (ablate counts epochs), at `wall_time`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix seconds.
    pub wall_time: f64,
    pub step: i64,
    pub what: What,
}

/// The `what` of an event (the part of its oneof ablate writes).
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The first event of a file: [`FILE_VERSION`].
    FileVersion(String),
    Summary(Vec<Value>),
}

impl Event {
    pub fn file_version(wall_time: f64) -> Self {
        Self {
            wall_time,
            step: 0,
            what: What::FileVersion(FILE_VERSION.to_string()),
        }
    }

    pub fn summary(wall_time: f64, step: i64, values: Vec<Value>) -> Self {
        Self {
            wall_time,
            step,
            what: What::Summary(values),
        }
    }

    /// `Event`: wall_time 1, step 2 (left out when 0, as protobuf's own encoders do),
    /// file_version 3, summary 5 { value 1 (repeated) }.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.double(1, self.wall_time);
        if self.step != 0 {
            w.int64(2, self.step);
        }
        match &self.what {
            What::FileVersion(v) => w.string(3, v),
            What::Summary(values) => w.message(5, |s| {
                for v in values {
                    s.message(1, |m| v.encode(m));
                }
            }),
        }
        w.into_bytes()
    }

    /// An event read back from its bytes: what ablate writes, and the parts of other writers'
    /// events that mean the same (a value without data, or with data of another kind, is
    /// kept with [`ReadData::Other`]).
    pub fn decode(bytes: &[u8]) -> Result<ReadEvent, DecodeError> {
        let mut e = ReadEvent::default();
        for field in fields(bytes) {
            match field? {
                (1, v) => e.wall_time = v.double().unwrap_or_default(),
                (2, FieldValue::Varint(v)) => e.step = v as i64,
                (3, FieldValue::Bytes(b)) => {
                    e.file_version = Some(String::from_utf8_lossy(b).into_owned())
                }
                (5, FieldValue::Bytes(b)) => {
                    for field in fields(b) {
                        if let (1, FieldValue::Bytes(v)) = field? {
                            e.values.push(ReadValue::decode(v)?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

/// An event as [`Event::decode`] reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadEvent {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub values: Vec<ReadValue>,
}

/// A summary value as [`Event::decode`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadValue {
    pub tag: String,
    /// `(plugin name, content)` of its metadata.
    pub plugin: Option<(String, Vec<u8>)>,
    pub description: Option<String>,
    pub data: ReadData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadData {
    Scalar(f32),
    /// The strings of a string tensor.
    Text(Vec<String>),
    /// No `simple_value` and no string tensor (a plugin's record, or another writer's kind).
    Other,
}

impl ReadValue {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut v = ReadValue {
            tag: String::new(),
            plugin: None,
            description: None,
            data: ReadData::Other,
        };
        for field in fields(bytes) {
            match field? {
                (1, FieldValue::Bytes(b)) => v.tag = String::from_utf8_lossy(b).into_owned(),
                (2, f) => v.data = f.float().map_or(ReadData::Other, ReadData::Scalar),
                (8, FieldValue::Bytes(t)) => {
                    let mut strings = Vec::new();
                    let mut dtype = 0;
                    for field in fields(t) {
                        match field? {
                            (1, FieldValue::Varint(d)) => dtype = d,
                            (8, FieldValue::Bytes(s)) => {
                                strings.push(String::from_utf8_lossy(s).into_owned())
                            }
                            _ => {}
                        }
                    }
                    if dtype == DT_STRING as u64 {
                        v.data = ReadData::Text(strings);
                    }
                }
                (9, FieldValue::Bytes(m)) => {
                    for field in fields(m) {
                        match field? {
                            (1, FieldValue::Bytes(p)) => {
                                let (mut name, mut content) = (String::new(), Vec::new());
                                for field in fields(p) {
                                    match field? {
                                        (1, FieldValue::Bytes(n)) => {
                                            name = String::from_utf8_lossy(n).into_owned()
                                        }
                                        (2, FieldValue::Bytes(c)) => content = c.to_vec(),
                                        _ => {}
                                    }
                                }
                                v.plugin = Some((name, content));
                            }
                            (3, FieldValue::Bytes(d)) => {
                                v.description = Some(String::from_utf8_lossy(d).into_owned())
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back() {
        let e = Event::file_version(1.5);
        let back = Event::decode(&e.encode()).unwrap();
        assert_eq!(back.wall_time, 1.5);
        assert_eq!(back.file_version.as_deref(), Some(FILE_VERSION));

        let e = Event::summary(
            2.0,
            7,
            vec![
                Value::scalar("test/top1", 12.25).described("percent"),
                Value::scalar("train/loss", -0.0),
                Value::text("pruning/structure", "learned-group 3/4 live"),
                Value::plugin("_hparams_/x", "hparams", vec![1, 2, 3]),
            ],
        );
        let back = Event::decode(&e.encode()).unwrap();
        assert_eq!((back.wall_time, back.step), (2.0, 7));
        let v = &back.values;
        assert_eq!(v.len(), 4);
        assert_eq!(
            (v[0].tag.as_str(), &v[0].data),
            ("test/top1", &ReadData::Scalar(12.25))
        );
        assert_eq!(v[0].description.as_deref(), Some("percent"));
        assert_eq!(v[0].plugin, Some(("scalars".into(), vec![])));
        assert_eq!(v[1].data, ReadData::Scalar(-0.0));
        assert_eq!((&v[1].description, &v[1].plugin), (&None, &None));
        assert_eq!(
            v[2].data,
            ReadData::Text(vec!["learned-group 3/4 live".into()])
        );
        assert_eq!(v[2].plugin, Some(("text".into(), vec![])));
        assert_eq!(v[3].data, ReadData::Other);
        assert_eq!(v[3].plugin, Some(("hparams".into(), vec![1, 2, 3])));
    }

    #[test]
    fn negative_steps_and_damage() {
        let e = Event::summary(0.0, -3, vec![]);
        assert_eq!(Event::decode(&e.encode()).unwrap().step, -3);
        let bytes = Event::summary(0.0, 1, vec![Value::scalar("a", 1.0)]).encode();
        assert!(Event::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
