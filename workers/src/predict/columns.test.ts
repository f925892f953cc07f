import { Bool, Field, FixedSizeList, Float32, List, RecordBatch, Schema, Struct, makeData, vectorFromArray } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { bindInputs, columnToTensor } from './columns.js';

function batchOf(fields: Field[], children: ReturnType<typeof makeData>[], length: number): RecordBatch {
  return new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length, nullCount: 0, children }));
}

describe('columnToTensor', () => {
  it('views a list column and a scalar column, also in a sliced batch, and names a bad row', () => {
    const lt = new List(new Field('item', new Float32(), false));
    const lists = vectorFromArray([[0, 1], [2, 3], [4, 5], [6, 7]], lt);
    const scalars = vectorFromArray([10, 11, 12, 13], new Float32());
    const fields = [new Field('x', lt, false), new Field('s', new Float32(), false)];
    const batch = batchOf(fields, [lists.data[0]!, scalars.data[0]!], 4).slice(1, 3);
    const [bx, bs] = bindInputs(batch.schema, [{ name: 'x', dtype: 'float32', shape: [-1, 2] }, { name: 's', dtype: 'float32', shape: [-1] }], 'test');
    expect(Array.from(columnToTensor(batch, bx!, 1, 'test').data as Float32Array)).toEqual([2, 3, 4, 5]);
    expect(Array.from(columnToTensor(batch, bs!, 1, 'test').data as Float32Array)).toEqual([11, 12]);
    const ragged = batchOf([fields[0]!], [vectorFromArray([[0, 1], [2], [4, 5]], lt).data[0]!], 3);
    expect(() => columnToTensor(ragged, bx!, 100, 'test')).toThrow('test: column "x" row 101: list of length 1, model input "x" needs float32 [n,2]');
  });

  it('views a fixed_size_list column, also in a sliced batch', () => {
    const values = Float32Array.from({ length: 12 }, (_, i) => i);
    const type = new FixedSizeList(3, new Field('item', new Float32(), false));
    const field = new Field('x', type, false);
    const batch = batchOf([field], [makeData({ type, length: 4, child: makeData({ type: new Float32(), length: 12, data: values }) })], 4);
    const [binding] = bindInputs(batch.schema, [{ name: 'x', dtype: 'float32', shape: [-1, 3] }], 'test');
    const sliced = batch.slice(1, 3);
    const t = columnToTensor(sliced, binding!, 1, 'test');
    expect(t.shape).toEqual([2, 3]);
    expect(Array.from(t.data as Float32Array)).toEqual([3, 4, 5, 6, 7, 8]);
  });

  it('unpacks a bit-packed bool column to one byte per value', () => {
    const v = vectorFromArray([true, false, true, true, false, false, false, false, true], new Bool());
    const field = new Field('b', new Bool(), false);
    const batch = batchOf([field], [v.data[0]!], 9);
    const [binding] = bindInputs(batch.schema, [{ name: 'b', dtype: 'bool', shape: [-1] }], 'test');
    const t = columnToTensor(batch, binding!, 0, 'test');
    expect(Array.from(t.data as Uint8Array)).toEqual([1, 0, 1, 1, 0, 0, 0, 0, 1]);
    expect(Array.from(columnToTensor(batch.slice(2, 9), binding!, 2, 'test').data as Uint8Array)).toEqual([1, 1, 0, 0, 0, 0, 1]);
  });
});
