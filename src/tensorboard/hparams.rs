//! The HParams plugin's records, with the field numbers of TensorBoard's
//! `tensorboard/plugins/hparams/plugin_data.proto` and `api.proto`: a summary value of plugin
//! [`PLUGIN_NAME`] whose content is an `HParamsPluginData` (version 0) holding one of
//!
//! - an `Experiment` (tag [`EXPERIMENT_TAG`]): the hyperparameters (name, type, the values the
//!   experiment takes) and the metrics (scalar tags) of the table, written once per experiment;
//! - a `SessionStartInfo` ([`SESSION_START_TAG`]): one run's hyperparameter values and start
//!   time, without a group name: TensorBoard then makes the session (the run's folder) a row
//!   of its own, so two run dirs of one config (one moved aside by `ablate run --force`) are
//!   two rows, never one row averaging both;
//! - a `SessionEndInfo` ([`SESSION_END_TAG`]): how and when the run ended.
//!
//! TensorBoard reads a session's metric values from the last value of each metric's scalar tag
//! in the session's own folder.

use crate::proto::Writer;

pub const PLUGIN_NAME: &str = "hparams";
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// A hyperparameter's value: a `google.protobuf.Value` of kind number, string or bool.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl HParamValue {
    /// `google.protobuf.Value`: number_value 2, string_value 3, bool_value 4 (a oneof: written
    /// even when zero).
    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Number(v) => w.double(2, *v),
            Self::Text(v) => w.string(3, v),
            Self::Bool(v) => w.bool(4, *v),
        }
    }
}

/// `api.proto`'s `DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    String = 1,
    Bool = 2,
    Float64 = 3,
}

/// One column of hyperparameters in the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamInfo {
    pub name: String,
    pub description: String,
    pub data_type: DataType,
    /// Every value the experiment gives it, in order, without repeats.
    pub domain: Vec<HParamValue>,
}

/// One metric column: a scalar tag of each session's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInfo {
    pub tag: &'static str,
    pub display_name: &'static str,
    pub description: &'static str,
}

/// `SessionEndInfo.status` (`api.proto`'s `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Success = 1,
    Failure = 2,
}

/// `HParamsPluginData`: version 1 (0, the plugin's only version; written although it is the
/// default), then `data` of field `field`.
fn plugin_data(field: u32, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.int64(1, 0);
    w.message(field, body);
    w.into_bytes()
}

/// The content of an `Experiment` record: data field 2 { description 1, time_created_secs 3,
/// hparam_infos 4, metric_infos 5, name 6 }.
pub fn experiment(
    name: &str,
    description: &str,
    time_created: f64,
    hparams: &[HParamInfo],
    metrics: &[MetricInfo],
) -> Vec<u8> {
    plugin_data(2, |e| {
        e.string(1, description);
        e.double(3, time_created);
        for h in hparams {
            // HParamInfo: name 1, description 3, type 4, domain_discrete 5 (ListValue
            // { values 1 }), differs 7.
            e.message(4, |i| {
                i.string(1, &h.name);
                i.string(3, &h.description);
                i.int64(4, h.data_type as i64);
                i.message(5, |l| {
                    for v in &h.domain {
                        l.message(1, |m| v.encode(m));
                    }
                });
                i.bool(7, h.domain.len() > 1);
            });
        }
        for m in metrics {
            // MetricInfo: name 1 (MetricName { group 1, tag 2 }; group "" is the session's own
            // folder), display_name 3, description 4.
            e.message(5, |i| {
                i.message(1, |n| n.string(2, m.tag));
                i.string(3, m.display_name);
                i.string(4, m.description);
            });
        }
        e.string(6, name);
    })
}

/// The content of a `SessionStartInfo` record: data field 3 { hparams 1 (a map: entries
/// { key 1, value 2 }), model_uri 2, start_time_secs 5 } (group_name 4 left empty).
pub fn session_start(
    hparams: &[(String, HParamValue)],
    model_uri: &str,
    start_time: f64,
) -> Vec<u8> {
    plugin_data(3, |s| {
        for (key, value) in hparams {
            s.message(1, |entry| {
                entry.string(1, key);
                entry.message(2, |v| value.encode(v));
            });
        }
        s.string(2, model_uri);
        s.double(5, start_time);
    })
}

/// The content of a `SessionEndInfo` record: data field 4 { status 1, end_time_secs 2 }.
pub fn session_end(status: SessionStatus, end_time: f64) -> Vec<u8> {
    plugin_data(4, |s| {
        s.int64(1, status as i64);
        s.double(2, end_time);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{fields, FieldValue};

    fn all(bytes: &[u8]) -> Vec<(u32, FieldValue<'_>)> {
        fields(bytes).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn session_start_holds_the_map_and_no_group() {
        let content = session_start(
            &[
                ("model.p".into(), HParamValue::Number(2.0)),
                ("preset".into(), HParamValue::Text("condensenext".into())),
                ("model.nesterov".into(), HParamValue::Bool(false)),
            ],
            "/r/abc",
            10.0,
        );
        let top = all(&content);
        assert_eq!(top[0], (1, FieldValue::Varint(0)), "version 0");
        assert_eq!(top[1].0, 3, "session_start_info");
        let info = all(top[1].1.bytes().unwrap());
        let entries: Vec<_> = info
            .iter()
            .filter(|(f, _)| *f == 1)
            .map(|(_, e)| all(e.bytes().unwrap()))
            .collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0][0].1.bytes(), Some(&b"model.p"[..]));
        assert_eq!(
            all(entries[0][1].1.bytes().unwrap()),
            [(2, FieldValue::Fixed64(2f64.to_bits()))]
        );
        assert_eq!(
            all(entries[1][1].1.bytes().unwrap()),
            [(3, FieldValue::Bytes(b"condensenext"))]
        );
        // A false bool is still written: it is the oneof's choice.
        assert_eq!(
            all(entries[2][1].1.bytes().unwrap()),
            [(4, FieldValue::Varint(0))]
        );
        assert!(!info.iter().any(|(f, _)| *f == 4), "no group name");
        assert!(info.contains(&(2, FieldValue::Bytes(b"/r/abc"))));
        assert!(info.contains(&(5, FieldValue::Fixed64(10f64.to_bits()))));
    }

    #[test]
    fn session_end_and_experiment() {
        let end = session_end(SessionStatus::Failure, 3.0);
        let top = all(&end);
        assert_eq!(top[1].0, 4);
        assert_eq!(
            all(top[1].1.bytes().unwrap()),
            [
                (1, FieldValue::Varint(2)),
                (2, FieldValue::Fixed64(3f64.to_bits()))
            ]
        );
        let hp = HParamInfo {
            name: "model.p".into(),
            description: String::new(),
            data_type: DataType::Float64,
            domain: vec![HParamValue::Number(1.0), HParamValue::Number(2.0)],
        };
        let metric = MetricInfo {
            tag: "test/top1",
            display_name: "final test top-1",
            description: "",
        };
        let exp = experiment("ci", "", 0.0, &[hp], &[metric]);
        let top = all(&exp);
        assert_eq!(top[1].0, 2);
        let e = all(top[1].1.bytes().unwrap());
        let info = all(e.iter().find(|(f, _)| *f == 4).unwrap().1.bytes().unwrap());
        assert!(info.contains(&(4, FieldValue::Varint(3))), "type float64");
        assert!(info.contains(&(7, FieldValue::Varint(1))), "differs");
        let domain = all(info
            .iter()
            .find(|(f, _)| *f == 5)
            .unwrap()
            .1
            .bytes()
            .unwrap());
        assert_eq!(domain.len(), 2);
        let m = all(e.iter().find(|(f, _)| *f == 5).unwrap().1.bytes().unwrap());
        assert_eq!(
            all(m[0].1.bytes().unwrap()),
            [(2, FieldValue::Bytes(b"test/top1"))]
        );
        assert!(e.contains(&(6, FieldValue::Bytes(b"ci"))));
    }
}
