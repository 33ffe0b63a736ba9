//! Recovers the message of a custom serialization error.
//!
//! The binary format's error type keeps only its own error kinds: when a
//! value's `Serialize` impl fails with `S::Error::custom(message)`, the
//! message is dropped. On that error path only, the value is serialized
//! again into [`Catcher`], which writes nothing and whose error keeps the
//! message.

use serde::ser::{self, Serialize};
use std::fmt;

/// The message of a custom error, or of nothing.
#[derive(Debug)]
pub(super) struct Caught(pub(super) String);

impl fmt::Display for Caught {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Caught {}

impl ser::Error for Caught {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Caught(msg.to_string())
    }
}

/// The message `value`'s serialization fails with, if it fails.
pub(super) fn message<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(Catcher).err().map(|Caught(m)| m)
}

/// A serializer that walks a value, writes nothing and keeps the first
/// error's message. Like the binary format, it is not human-readable, so
/// that values take the same path through their `Serialize` impls.
struct Catcher;

type R = Result<(), Caught>;

macro_rules! leaves {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, _: $ty) -> R { Ok(()) })*
    };
}

impl ser::Serializer for Catcher {
    type Ok = ();
    type Error = Caught;
    type SerializeSeq = Catcher;
    type SerializeTuple = Catcher;
    type SerializeTupleStruct = Catcher;
    type SerializeTupleVariant = Catcher;
    type SerializeMap = Catcher;
    type SerializeStruct = Catcher;
    type SerializeStructVariant = Catcher;

    leaves!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn serialize_tuple(self, _: usize) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Catcher, Caught> {
        Ok(Catcher)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> R {
        Ok(())
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The compound serializers: each element or field is walked in turn.
macro_rules! compound {
    ($($trait:ident::$method:ident($($key:ty)?)),* $(,)?) => {
        $(impl ser::$trait for Catcher {
            type Ok = ();
            type Error = Caught;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $key,)? value: &T) -> R {
                value.serialize(Catcher)
            }
            fn end(self) -> R {
                Ok(())
            }
        })*
    };
}

compound!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for Catcher {
    type Ok = ();
    type Error = Caught;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        key.serialize(Catcher)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(Catcher)
    }
    fn end(self) -> R {
        Ok(())
    }
}
