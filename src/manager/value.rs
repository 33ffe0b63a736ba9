//! Rust values to and from the plain Python model ([`Value`]), by serde.
//!
//! `bool`, integers, floats, strings, bytes (`serde_bytes`), `Option`,
//! sequences, tuples, maps and structs map to the Python value a Python
//! program would use (`None`, `int`, `float`, `str`, `bytes`, `list`,
//! `tuple`, `dict`; a struct is a `dict` of its field names). A unit enum
//! variant is its name as a `str`; a variant with data is a one-entry `dict`
//! `{name: data}`. Proxies are Python's `RebuildProxy(...)` form.

use crate::error::{Error, Result};
use crate::pickle::{self, Value};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::fmt::Display;

/// The newtype-struct name a proxy serializes under, so that the value
/// model can write it as a Python `RebuildProxy` call.
pub(crate) const PROXY_MARK: &str = "\0multiproc.manager.Proxy";
/// The newtype-struct name a [`Value`] serializes under: its pickle, so
/// that it passes through this model unchanged (tuples stay tuples,
/// objects stay objects) and through other formats as bytes.
const RAW_MARK: &str = "\0multiproc.pickle.Value";

/// A [`Value`] travels as its pickle: through [`to_value`] unchanged, and
/// through other serde formats (process arguments) as bytes.
impl Serialize for Value {
    fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(RAW_MARK, serde_bytes::Bytes::new(&pickle::dumps(self)))
    }
}

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Raw;
        impl<'de> Visitor<'de> for Raw {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a pickled plain value")
            }
            fn visit_newtype_struct<D: de::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Value, D::Error> {
                let b: serde_bytes::ByteBuf = de::Deserialize::deserialize(d)?;
                pickle::loads_objects(&b).map_err(de::Error::custom)
            }
        }
        d.deserialize_newtype_struct(RAW_MARK, Raw)
    }
}

/// Converts a Rust value to the plain model.
///
/// # Errors
/// [`Error::Encode`] for values with no Python form (integers beyond `i64`,
/// maps with keys that cannot be Python keys are still allowed).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value.serialize(ValueSer)
}

/// Converts a plain value back to a Rust value.
///
/// # Errors
/// [`Error::Decode`] when the value does not have the shape `T` expects.
pub fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T> {
    T::deserialize(ValueDe(value))
}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Encode(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Decode(msg.to_string())
    }
}

struct ValueSer;

struct SeqSer {
    items: Vec<Value>,
    tuple: bool,
    variant: Option<&'static str>,
}

struct MapSer {
    items: Vec<(Value, Value)>,
    key: Option<Value>,
    variant: Option<&'static str>,
}

fn wrap(variant: Option<&'static str>, v: Value) -> Value {
    match variant {
        Some(name) => Value::Dict(vec![(Value::from(name), v)]),
        None => v,
    }
}

impl ser::Serializer for ValueSer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = SeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = MapSer;

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(Value::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| Error::Encode(format!("{v} does not fit in a Python int of 64 bits")))
    }
    fn serialize_i128(self, v: i128) -> Result<Value> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| Error::Encode(format!("{v} does not fit in a Python int of 64 bits")))
    }
    fn serialize_u128(self, v: u128) -> Result<Value> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| Error::Encode(format!("{v} does not fit in a Python int of 64 bits")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value> {
        Ok(Value::from(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value> {
        let v = value.serialize(self)?;
        match (name, v) {
            (PROXY_MARK, v) => super::proxy::proxy_to_python(v),
            (RAW_MARK, Value::Bytes(b)) => pickle::loads_objects(&b),
            (_, v) => Ok(v),
        }
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value> {
        Ok(wrap(Some(variant), value.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer> {
        Ok(SeqSer {
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            tuple: false,
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer> {
        Ok(SeqSer {
            items: Vec::with_capacity(len.min(4096)),
            tuple: true,
            variant: None,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqSer> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer> {
        let mut s = self.serialize_tuple(len)?;
        s.variant = Some(variant);
        Ok(s)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapSer> {
        Ok(MapSer {
            items: Vec::new(),
            key: None,
            variant: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapSer> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<MapSer> {
        let mut m = self.serialize_map(None)?;
        m.variant = Some(variant);
        Ok(m)
    }
}

macro_rules! seq_impl {
    ($tr:ident, $m:ident) => {
        impl ser::$tr for SeqSer {
            type Ok = Value;
            type Error = Error;
            fn $m<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.items.push(value.serialize(ValueSer)?);
                Ok(())
            }
            fn end(self) -> Result<Value> {
                let v = if self.tuple {
                    Value::Tuple(self.items)
                } else {
                    Value::List(self.items)
                };
                Ok(wrap(self.variant, v))
            }
        }
    };
}
seq_impl!(SerializeSeq, serialize_element);
seq_impl!(SerializeTuple, serialize_element);
seq_impl!(SerializeTupleStruct, serialize_field);
seq_impl!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.key = Some(key.serialize(ValueSer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let k = self
            .key
            .take()
            .ok_or_else(|| Error::Encode("map value without a key".into()))?;
        self.items.push((k, value.serialize(ValueSer)?));
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(wrap(self.variant, Value::Dict(self.items)))
    }
}

macro_rules! struct_impl {
    ($tr:ident) => {
        impl ser::$tr for MapSer {
            type Ok = Value;
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<()> {
                self.items
                    .push((Value::from(key), value.serialize(ValueSer)?));
                Ok(())
            }
            fn end(self) -> Result<Value> {
                Ok(wrap(self.variant, Value::Dict(self.items)))
            }
        }
    };
}
struct_impl!(SerializeStruct);
struct_impl!(SerializeStructVariant);

/// Deserializes from an owned [`Value`].
pub(crate) struct ValueDe(pub(crate) Value);

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Dict(_) => "dict",
        Value::Global(_) => "global",
        Value::Object(_) => "object",
    }
}

fn mismatch(v: &Value, want: &str) -> Error {
    Error::Decode(format!("expected {want}, the manager sent a {}", kind(v)))
}

struct SeqAccess(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for SeqAccess {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        self.0
            .next()
            .map(|v| seed.deserialize(ValueDe(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct MapAccess {
    items: std::vec::IntoIter<(Value, Value)>,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for MapAccess {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.items.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(ValueDe(k)).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let v = self
            .value
            .take()
            .ok_or_else(|| Error::Decode("map value without a key".into()))?;
        seed.deserialize(ValueDe(v))
    }
}

struct EnumAccess(String, Option<Value>);

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = Error;
    type Variant = VariantAccess;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, VariantAccess)> {
        let name: de::value::StringDeserializer<Error> = self.0.into_deserializer();
        Ok((seed.deserialize(name)?, VariantAccess(self.1)))
    }
}

struct VariantAccess(Option<Value>);

impl<'de> de::VariantAccess<'de> for VariantAccess {
    type Error = Error;
    fn unit_variant(self) -> Result<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(ValueDe(self.0.unwrap_or(Value::None)))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_seq(ValueDe(self.0.unwrap_or(Value::None)), visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_map(ValueDe(self.0.unwrap_or(Value::None)), visitor)
    }
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0 {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(n) => visitor.visit_i64(n),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::List(items) | Value::Tuple(items) => {
                visitor.visit_seq(SeqAccess(items.into_iter()))
            }
            Value::Dict(items) => visitor.visit_map(MapAccess {
                items: items.into_iter(),
                value: None,
            }),
            other => Err(mismatch(&other, "a plain value")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0 {
            Value::None => visitor.visit_none(),
            v => visitor.visit_some(ValueDe(v)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0 {
            Value::Int(n) => visitor.visit_f64(n as f64),
            v => ValueDe(v).deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // Anything stands for "no result" (a method whose value is ignored).
        drop(self);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == PROXY_MARK {
            let v = super::proxy::proxy_from_python(self.0)?;
            return visitor.visit_newtype_struct(ValueDe(v));
        }
        if name == RAW_MARK {
            return visitor.visit_newtype_struct(ValueDe(Value::Bytes(pickle::dumps(&self.0))));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.0 {
            Value::Str(s) => visitor.visit_enum(EnumAccess(s, None)),
            Value::Dict(mut items) if items.len() == 1 => {
                let (k, v) = items.pop().expect("one item");
                match k {
                    Value::Str(s) => visitor.visit_enum(EnumAccess(s, Some(v))),
                    k => Err(mismatch(&k, "an enum variant name")),
                }
            }
            v => Err(mismatch(&v, "an enum (a str or a one-entry dict)")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        bytes byte_buf unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Point {
        x: i32,
        label: String,
        tags: Vec<String>,
        extra: Option<f64>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect { w: u32, h: u32 },
    }

    #[test]
    fn structs_and_enums_round_trip() {
        let p = Point {
            x: -3,
            label: "a".into(),
            tags: vec!["t".into()],
            extra: None,
        };
        let v = to_value(&p).unwrap();
        assert!(matches!(&v, Value::Dict(d) if d.len() == 4));
        assert_eq!(from_value::<Point>(v).unwrap(), p);
        for s in [Shape::Empty, Shape::Circle(1.5), Shape::Rect { w: 1, h: 2 }] {
            let v = to_value(&s).unwrap();
            assert_eq!(from_value::<Shape>(v).unwrap(), s);
        }
        let t = (1u8, "x".to_string(), vec![(2i64, true)]);
        let v = to_value(&t).unwrap();
        assert_eq!(from_value::<(u8, String, Vec<(i64, bool)>)>(v).unwrap(), t);
        assert!(to_value(&u64::MAX).is_err());
        // A Value passes through unchanged, tuples and objects included.
        let raw = Value::List(vec![
            Value::Tuple(vec![Value::Int(1), Value::None]),
            Value::call("builtins", "KeyError", vec![Value::from("k")]),
        ]);
        assert_eq!(to_value(&raw).unwrap(), raw);
        assert_eq!(from_value::<Value>(raw.clone()).unwrap(), raw);
        let pair = (raw.clone(), 5u8);
        assert_eq!(
            from_value::<(Value, u8)>(to_value(&pair).unwrap()).unwrap(),
            pair
        );
        assert!(from_value::<u8>(Value::Int(300)).is_err());
        assert!(from_value::<String>(Value::Int(3)).is_err());
    }
}
