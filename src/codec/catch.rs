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

// ---------------------------------------------------------------- decoding
//
// The same loss happens on the way in: a `Deserialize` impl that rejects
// the data (`invalid value: integer 7, expected variant index 0 <= i < 3`,
// a `try_from` check, …) fails with a custom error and the format keeps no
// message. On that error path, the bytes are decoded once more through
// `CatchDe`, which wraps the format's deserializer and whose error type
// keeps the message. The visitors the user's impls hand to the format are
// wrapped too, so that an error they raise with the format's error type is
// noted on the way out.

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

thread_local! {
    /// The first message raised during a re-run, by a visitor called with
    /// the format's own error type.
    static NOTED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Set while a re-run is under way (handles are not decoded then).
    static RERUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The message a handle gives when met during a re-run: the received
/// descriptors were used up by the first attempt, so the re-run stops.
pub(super) const NO_HANDLES_IN_RERUN: &str = "multiproc: handles are not decoded twice";

/// Whether a re-run is under way on this thread.
pub(super) fn rerunning() -> bool {
    RERUN.with(|r| r.get())
}

impl de::Error for Caught {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Caught(msg.to_string())
    }
}

/// Notes `c` (the first note wins) and turns it into the error type `E` of
/// the layer below.
fn note<E: de::Error>(c: Caught) -> E {
    NOTED.with(|n| {
        n.borrow_mut().get_or_insert_with(|| c.0.clone());
    });
    E::custom(c.0)
}

/// Turns an error of the layer below into ours, keeping a noted message.
fn lift<E: fmt::Display>(e: E) -> Caught {
    Caught(
        NOTED
            .with(|n| n.borrow().clone())
            .unwrap_or_else(|| e.to_string()),
    )
}

/// The message with which decoding `bytes` as a `T` fails, if it does and
/// no handle stands in the way.
pub(super) fn decode_message<T: de::DeserializeOwned>(bytes: &[u8], depth: u32) -> Option<String> {
    /// Ends the re-run even if a `Deserialize` impl panics.
    struct Rerun;
    impl Drop for Rerun {
        fn drop(&mut self) {
            RERUN.with(|r| r.set(false));
            NOTED.with(|n| n.borrow_mut().take());
        }
    }
    NOTED.with(|n| n.borrow_mut().take());
    RERUN.with(|r| r.set(true));
    let rerun = Rerun;
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let res = T::deserialize(CatchDe(super::depth::Depth(
        &mut de,
        super::depth::Budget::new(depth),
    )));
    drop(rerun);
    match res {
        Err(Caught(m)) if m != NO_HANDLES_IN_RERUN => Some(m),
        _ => None,
    }
}

struct CatchDe<D>(D);
struct CatchVisitor<V>(V);
struct CatchSeed<S>(S);
struct CatchAccess<A>(A);

macro_rules! forward_de {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Caught> {
            self.0.$method($($arg,)* CatchVisitor(visitor)).map_err(lift)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for CatchDe<D> {
    type Error = Caught;

    deserializer_methods!(forward_de);

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method::<Caught>(v).map_err(note)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for CatchVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    visitor_leaf_methods!(forward_visit);

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none::<Caught>().map_err(note)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit::<Caught>().map_err(note)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(CatchDe(d)).map_err(note)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(CatchDe(d)).map_err(note)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(CatchAccess(a)).map_err(note)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(CatchAccess(a)).map_err(note)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(CatchAccess(a)).map_err(note)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for CatchSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(CatchDe(d)).map_err(note)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for CatchAccess<A> {
    type Error = Caught;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Caught> {
        self.0.next_element_seed(CatchSeed(seed)).map_err(lift)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for CatchAccess<A> {
    type Error = Caught;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Caught> {
        self.0.next_key_seed(CatchSeed(seed)).map_err(lift)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Caught> {
        self.0.next_value_seed(CatchSeed(seed)).map_err(lift)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for CatchAccess<A> {
    type Error = Caught;
    type Variant = CatchAccess<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Caught> {
        self.0
            .variant_seed(CatchSeed(seed))
            .map(|(v, variant)| (v, CatchAccess(variant)))
            .map_err(lift)
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for CatchAccess<A> {
    type Error = Caught;

    fn unit_variant(self) -> Result<(), Caught> {
        self.0.unit_variant().map_err(lift)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Caught> {
        self.0.newtype_variant_seed(CatchSeed(seed)).map_err(lift)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Caught> {
        self.0
            .tuple_variant(len, CatchVisitor(visitor))
            .map_err(lift)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Caught> {
        self.0
            .struct_variant(fields, CatchVisitor(visitor))
            .map_err(lift)
    }
}
