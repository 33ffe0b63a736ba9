//! A nesting limit for decoding.
//!
//! The binary format decodes recursively: a value nested `n` levels deep
//! takes `n` nested calls, so a hostile peer could overflow the receiver's
//! stack with a small message (`Some(Some(Some(…)))` a hundred thousand
//! times is a few hundred kilobytes). [`Depth`] wraps the format's
//! deserializer and every visitor, seed and access the value's `Deserialize`
//! impl hands to it; each nested container costs one level of a budget that
//! travels down the recursion by value, and entering a container with no
//! level left is an error instead of one more call.
//!
//! One level is: an `Option` that is `Some`, a newtype struct, a sequence
//! (`Vec`, tuple, struct, array), a map, or an enum variant. Leaves cost
//! nothing. The success path adds one comparison per container.

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use std::fmt;

/// Levels left, and the limit (for the error message).
#[derive(Clone, Copy)]
pub(super) struct Budget {
    left: u32,
    limit: u32,
}

impl Budget {
    pub(super) fn new(limit: u32) -> Self {
        Budget { left: limit, limit }
    }

    /// One level down, or the error that ends the decode.
    #[inline]
    fn enter<E: de::Error>(self) -> Result<Budget, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Budget { left, ..self }),
            None => Err(self.exceeded()),
        }
    }

    #[cold]
    fn exceeded<E: de::Error>(self) -> E {
        super::de_error(format!(
            "the message nests deeper than the decoding limit of {} levels",
            self.limit
        ))
    }
}

/// A deserializer whose nested values are decoded within a [`Budget`].
pub(super) struct Depth<D>(pub(super) D, pub(super) Budget);
struct DepthVisitor<V>(V, Budget);
struct DepthSeed<S>(S, Budget);
struct DepthAccess<A>(A, Budget);

macro_rules! forward_de {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(#[inline]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method($($arg,)* DepthVisitor(visitor, self.1))
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Depth<D> {
    type Error = D::Error;

    deserializer_methods!(forward_de);

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(#[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for DepthVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    visitor_leaf_methods!(forward_visit);

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }
    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }
    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let b = self.1.enter()?;
        self.0.visit_some(Depth(d, b))
    }
    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let b = self.1.enter()?;
        self.0.visit_newtype_struct(Depth(d, b))
    }
    #[inline]
    fn visit_seq<A: de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        let b = self.1.enter()?;
        self.0.visit_seq(DepthAccess(a, b))
    }
    #[inline]
    fn visit_map<A: de::MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        let b = self.1.enter()?;
        self.0.visit_map(DepthAccess(a, b))
    }
    #[inline]
    fn visit_enum<A: de::EnumAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        let b = self.1.enter()?;
        self.0.visit_enum(DepthAccess(a, b))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for DepthSeed<S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Depth(d, self.1))
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for DepthAccess<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(DepthSeed(seed, self.1))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for DepthAccess<A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(DepthSeed(seed, self.1))
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(DepthSeed(seed, self.1))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for DepthAccess<A> {
    type Error = A::Error;
    type Variant = DepthAccess<A::Variant>;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), A::Error> {
        let b = self.1;
        self.0
            .variant_seed(DepthSeed(seed, b))
            .map(|(v, variant)| (v, DepthAccess(variant, b)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for DepthAccess<A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(DepthSeed(seed, self.1))
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, DepthVisitor(visitor, self.1))
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, DepthVisitor(visitor, self.1))
    }
}
