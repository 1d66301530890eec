"""Vectors of 512 bits as values in compiled code, for kernels that must hold their sums in
registers: ``dense.nonzero_rows_product``, a product over the nonzero columns of a block of
rows, keeps a block of 6 rows x 4 vectors of its output in 24 registers across the whole sum.

Numba has no vector type, and LLVM's vectorizer does not keep a loop's output in registers
across an outer loop (a sum into memory loads and stores the output at every term: 2.5x slower
on the seed network's first layer). ``Vec`` is a Numba type whose value is an LLVM vector
(``<16 x float>``, ``<8 x double>``); the intrinsics below emit LLVM's own vector operations, which
LLVM lowers for the machine it compiles on: one AVX-512 register each, or two AVX2 ones.

Offsets count elements from an array's data pointer and are not checked: the caller keeps
every access inside the array (``count`` lanes from ``off``). Lanes past ``count`` are not read
and not written (LLVM's masked loads and stores).

``prefetch_line`` is LLVM's prefetch hint, for the batch gather (``parallel.copy_rows``), and
``fetch_add`` an atomic addition, for threads that take work from a shared counter
(``inference.predict_batches_parallel``).
"""
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model
from numba.np.arrayobj import make_array

VECTOR_BITS = 512

# The intrinsics' names are LLVM 20's (opaque pointers, ``llvm.experimental.vector.compress``);
# Numba 0.62 and later build on it. With an older LLVM the kernels that use them are not called
# (``SIMD`` is a constant their callers prune on) and BLAS does their work.
SIMD = binding.llvm_version_info >= (20,)


class Vec(types.Type):
    """A vector of ``VECTOR_BITS`` bits of ``dtype`` (float32 or float64) lanes."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BITS // dtype.bitwidth
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _float_array(a):
    return isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)


def _element_pointer(context, builder, array_type, array, off, off_type):
    data = make_array(array_type)(context, builder, array).data
    return builder.gep(data, [context.cast(builder, off, off_type, types.intp)])


def _splat(builder, value, vector_type):
    lanes = ir.VectorType(ir.IntType(32), vector_type.count)
    one = builder.insert_element(ir.Constant(vector_type, None), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, ir.Constant(lanes, None))


def _first_lanes(context, builder, count, count_type, lanes):
    """The mask of lanes j < count."""
    index = ir.VectorType(ir.IntType(64), lanes)
    count = context.cast(builder, count, count_type, types.int64)
    return builder.icmp_signed("<", ir.Constant(index, list(range(lanes))), _splat(builder, count, index))


def _suffix(vector_type):
    element = vector_type.element
    kind = "f32" if element == ir.FloatType() else "f64" if element == ir.DoubleType() else f"i{element.width}"
    return f"v{vector_type.count}{kind}"


def _masked_load(builder, pointer, vector_type, mask, align):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector_type, [pointer.type, ir.IntType(32), mask.type, vector_type]),
        f"llvm.masked.load.{_suffix(vector_type)}.p0")
    return builder.call(fn, [pointer, ir.Constant(ir.IntType(32), align), mask, ir.Constant(vector_type, None)])


def _masked_store(builder, value, pointer, mask, align):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [value.type, pointer.type, ir.IntType(32), mask.type]),
        f"llvm.masked.store.{_suffix(value.type)}.p0")
    builder.call(fn, [value, pointer, ir.Constant(ir.IntType(32), align), mask])


def _load(context, builder, signature, args, vec):
    """args (array, off, count): count lanes of the array from off, 0 in the others."""
    vector_type = context.get_value_type(vec)
    pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1])
    mask = _first_lanes(context, builder, args[2], signature.args[2], vec.lanes)
    return _masked_load(builder, builder.bitcast(pointer, vector_type.as_pointer()), vector_type, mask,
                        vec.dtype.bitwidth // 8), mask


@intrinsic
def vec_lanes(typingctx, a):
    """The lanes of a ``Vec`` of ``a``'s dtype (16 for float32, 8 for float64), a constant."""
    if not _float_array(a):
        return None
    lanes = Vec(a.dtype).lanes

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, lanes)
    return types.intp(a), codegen


@intrinsic
def vec_zeros(typingctx, a):
    """A ``Vec`` of ``a``'s dtype, every lane 0."""
    if not _float_array(a):
        return None
    vec = Vec(a.dtype)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vec), None)
    return vec(a), codegen


@intrinsic
def vec_load(typingctx, a, off, count):
    """a's elements off .. off + count - 1 (count <= lanes) as a ``Vec``; its other lanes 0."""
    if not _float_array(a):
        return None
    vec = Vec(a.dtype)

    def codegen(context, builder, signature, args):
        return _load(context, builder, signature, args, vec)[0]
    return vec(a, off, count), codegen


@intrinsic
def vec_store(typingctx, v, a, off, count):
    """a's elements off .. off + count - 1 (count <= lanes) = v's first count lanes."""
    if not (isinstance(v, Vec) and _float_array(a) and a.dtype == v.dtype):
        return None

    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(v)
        pointer = _element_pointer(context, builder, signature.args[1], args[1], args[2], signature.args[2])
        mask = _first_lanes(context, builder, args[3], signature.args[3], v.lanes)
        _masked_store(builder, args[0], builder.bitcast(pointer, vector_type.as_pointer()), mask,
                      v.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(v, a, off, count), codegen


@intrinsic
def vec_madd(typingctx, acc, s, v):
    """acc + s * v, s a scalar (one fused multiply-add where the machine has it)."""
    if not (isinstance(acc, Vec) and v == acc and isinstance(s, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, signature, args):
        vector_type = context.get_value_type(acc)
        scalar = _splat(builder, context.cast(builder, args[1], signature.args[1], acc.dtype), vector_type)
        return builder.fadd(args[0], builder.fmul(scalar, args[2], flags=("contract",)), flags=("contract",))
    return acc(acc, s, v), codegen


@intrinsic
def nonzero_bits(typingctx, a, off, count):
    """A uint64 whose bit j is set where a's element off + j is not 0 (NaN included: it is not
    0), for j < count <= lanes."""
    if not _float_array(a):
        return None
    vec = Vec(a.dtype)

    def codegen(context, builder, signature, args):
        value, mask = _load(context, builder, signature, args, vec)
        nonzero = builder.and_(builder.fcmp_unordered("!=", value, ir.Constant(value.type, None)), mask)
        return builder.zext(builder.bitcast(nonzero, ir.IntType(vec.lanes)), ir.IntType(64))
    return types.uint64(a, off, count), codegen


@intrinsic
def append_bit_positions(typingctx, bits, base, idx, n, like):
    """idx[n], idx[n + 1], ... = base + j for each set bit j of ``bits`` (j < the lanes of a
    ``Vec`` of ``like``'s dtype), ascending; returns n + their number. Writes a whole vector of
    lanes int32 at idx[n]: idx needs that many elements of room past the last position."""
    if not (isinstance(bits, types.Integer) and _float_array(like) and isinstance(idx, types.Array)
            and idx.dtype == types.int32):
        return None
    lanes = Vec(like.dtype).lanes

    def codegen(context, builder, signature, args):
        int_lanes = ir.VectorType(ir.IntType(32), lanes)
        mask_bits = builder.trunc(context.cast(builder, args[0], signature.args[0], types.uint64), ir.IntType(lanes))
        mask = builder.bitcast(mask_bits, ir.VectorType(ir.IntType(1), lanes))
        first = builder.trunc(context.cast(builder, args[1], signature.args[1], types.int64), ir.IntType(32))
        positions = builder.add(_splat(builder, first, int_lanes), ir.Constant(int_lanes, list(range(lanes))))
        compress = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(int_lanes, [int_lanes, mask.type, int_lanes]),
            f"llvm.experimental.vector.compress.{_suffix(int_lanes)}")
        packed = builder.call(compress, [positions, mask, ir.Constant(int_lanes, None)])
        start = context.cast(builder, args[3], signature.args[3], types.intp)
        pointer = _element_pointer(context, builder, signature.args[2], args[2], start, types.intp)
        builder.store(packed, builder.bitcast(pointer, int_lanes.as_pointer()), align=4)
        popcount = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(lanes), [ir.IntType(lanes)]), f"llvm.ctpop.i{lanes}")
        count = builder.zext(builder.call(popcount, [mask_bits]), ir.IntType(64))
        return builder.add(start, count)
    return types.intp(bits, base, idx, n, like), codegen


@intrinsic
def element_at(typingctx, a, off):
    """a's element ``off`` counted from its data pointer (any layout: the caller's offsets walk it)."""
    if not _float_array(a):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_element_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1]))
    return a.dtype(a, off), codegen


@intrinsic
def prefetch_line(typingctx, a, off):
    """Ask the cache for the line holding a's element ``off`` (counted from its data pointer), to be
    read soon; returns at once. A hint: it changes no value, and a bad address is not an error."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        pointer = builder.bitcast(_element_pointer(context, builder, signature.args[0], args[0], args[1],
                                                   signature.args[1]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]), "llvm.prefetch.p0")
        # read (0), into every cache level (locality 3), data (1)
        builder.call(fn, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(a, off), codegen


@intrinsic
def fetch_add(typingctx, a, off, value):
    """a[off] += value as one atomic operation (threads adding at once lose no addition); returns
    a[off] before it. ``a`` an int64 array, ``off`` counted from its data pointer."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pointer = _element_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        return builder.atomic_rmw("add", pointer, context.cast(builder, args[2], signature.args[2], types.int64),
                                  "monotonic")
    return types.int64(a, off, value), codegen
