//! Tensors between the wire and tract: a request's elements read by the input's element type
//! (integers exact, floats range-checked, NaN and the infinities as written), and an answer's
//! elements written by the output's.

use tract_onnx::prelude::*;
use wire::ai::{DType, Scalar};

use crate::Error;

/// The wire type of a tract element type, for an input: only the types the wire carries.
pub(crate) fn input_dtype(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I64 => DType::I64,
        DatumType::I32 => DType::I32,
        DatumType::I8 => DType::I8,
        DatumType::U8 => DType::U8,
        DatumType::Bool => DType::Bool,
        DatumType::String => DType::String,
        _ => return None,
    })
}

/// The wire type an output of tract type `dt` is answered as: itself when the wire carries it, a
/// wider type that holds every value otherwise (f16 as f32, the other integers as i64).
pub(crate) fn output_dtype(dt: DatumType) -> Option<DType> {
    input_dtype(dt).or(match dt {
        DatumType::F16 => Some(DType::F32),
        DatumType::I16 | DatumType::U16 | DatumType::U32 | DatumType::TDim => Some(DType::I64),
        _ => None,
    })
}

/// A request's tensor for the input `name` of type `dtype`: each element checked against it.
pub(crate) fn to_tract(
    name: &str,
    dtype: DType,
    shape: &[usize],
    data: &[Scalar],
) -> Result<Tensor, Error> {
    let bad = |i: usize, v: &Scalar, what: &str| {
        Error::Shape(format!(
            "input {name:?} element {i} ({}) is not {what}",
            serde_json::to_string(v).unwrap_or_default()
        ))
    };
    let ints = |lo: i64, hi: i64, what: &str| -> Result<Vec<i64>, Error> {
        data.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Scalar::Int(x) if (lo..=hi).contains(x) => Ok(*x),
                _ => Err(bad(i, v, what)),
            })
            .collect()
    };
    let tensor = match dtype {
        DType::F32 => {
            let values = data
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_f64() {
                    Some(x) if x.is_finite() && x.abs() > f64::from(f32::MAX) => {
                        Err(bad(i, v, "within the range of f32"))
                    }
                    Some(x) => Ok(x as f32),
                    None => Err(bad(
                        i,
                        v,
                        "a number (or \"NaN\", \"Infinity\", \"-Infinity\")",
                    )),
                })
                .collect::<Result<Vec<f32>, Error>>()?;
            array(shape, values)?
        }
        DType::F64 => {
            let values = data
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().ok_or_else(|| {
                        bad(i, v, "a number (or \"NaN\", \"Infinity\", \"-Infinity\")")
                    })
                })
                .collect::<Result<Vec<f64>, Error>>()?;
            array(shape, values)?
        }
        DType::I64 => array(shape, ints(i64::MIN, i64::MAX, "an integer")?)?,
        DType::I32 => {
            let v = ints(i32::MIN.into(), i32::MAX.into(), "an integer within i32")?;
            array(shape, v.into_iter().map(|x| x as i32).collect())?
        }
        DType::I8 => {
            let v = ints(i8::MIN.into(), i8::MAX.into(), "an integer within i8")?;
            array(shape, v.into_iter().map(|x| x as i8).collect())?
        }
        DType::U8 => {
            let v = ints(0, u8::MAX.into(), "an integer from 0 to 255")?;
            array(shape, v.into_iter().map(|x| x as u8).collect())?
        }
        DType::Bool => {
            let values = data
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::Bool(b) => Ok(*b),
                    _ => Err(bad(i, v, "true or false")),
                })
                .collect::<Result<Vec<bool>, Error>>()?;
            array(shape, values)?
        }
        DType::String => {
            let values = data
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::Text(t) => Ok(t.clone()),
                    _ => Err(bad(i, v, "a string")),
                })
                .collect::<Result<Vec<String>, Error>>()?;
            array(shape, values)?
        }
    };
    Ok(tensor)
}

fn array<T: Datum>(shape: &[usize], values: Vec<T>) -> Result<Tensor, Error> {
    tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), values)
        .map(IntoTensor::into_tensor)
        .map_err(|e| Error::Shape(format!("shape {shape:?}: {e}")))
}

/// An output's elements on the wire, and the type they are written as.
pub(crate) fn from_tract(name: &str, tensor: &Tensor) -> Result<(DType, Vec<Scalar>), Error> {
    let fail = |e: TractError| Error::Inference(format!("output {name:?}: {e}"));
    let dtype = output_dtype(tensor.datum_type()).ok_or_else(|| {
        Error::Inference(format!(
            "output {name:?} is of type {:?}, which the service cannot answer",
            tensor.datum_type()
        ))
    })?;
    fn each<T: Datum + Copy>(t: &Tensor, f: impl Fn(T) -> Scalar) -> TractResult<Vec<Scalar>> {
        Ok(t.to_plain_array_view::<T>()?
            .iter()
            .map(|v| f(*v))
            .collect())
    }
    let values = match dtype {
        DType::F32 => {
            let t = tensor.cast_to::<f32>().map_err(fail)?;
            each::<f32>(&t, |v| Scalar::Float(f64::from(v)))
        }
        DType::F64 => each::<f64>(tensor, Scalar::Float),
        DType::I64 => {
            let t = tensor.cast_to::<i64>().map_err(fail)?;
            each::<i64>(&t, Scalar::Int)
        }
        DType::I32 => each::<i32>(tensor, |v| Scalar::Int(v.into())),
        DType::I8 => each::<i8>(tensor, |v| Scalar::Int(v.into())),
        DType::U8 => each::<u8>(tensor, |v| Scalar::Int(v.into())),
        DType::Bool => each::<bool>(tensor, Scalar::Bool),
        DType::String => tensor
            .to_plain_array_view::<String>()
            .map(|a| a.iter().map(|s| Scalar::Text(s.clone())).collect()),
    }
    .map_err(fail)?;
    Ok((dtype, values))
}
