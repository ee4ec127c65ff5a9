"""Attributes written through the low-level path read back exactly as h5py's own ``attrs[k] = v``."""

import h5py
import numpy as np
import pytest

from magflow.h5attrs import write_attrs

VALUES = {"text": "héllo – µm", "empty": "", "json": '{"a": [1, 2]}', "int": 5, "float": 0.499,
          "true": True, "np_false": np.bool_(False), "f32": np.float32(2.5), "i32": np.int32(-3),
          "u8": np.uint8(7), "list": [1, 2, 3], "array": np.arange(4.0)}


def test_attributes_read_back_with_h5py_types(tmp_path):
    with h5py.File(tmp_path / "ref.h5", "w") as ref, h5py.File(tmp_path / "fast.h5", "w") as fast:
        for key, value in VALUES.items():
            ref.attrs[key] = value
        group = fast.create_group("g")
        write_attrs(fast, VALUES)
        write_attrs(group, VALUES)
    with h5py.File(tmp_path / "ref.h5") as ref, h5py.File(tmp_path / "fast.h5") as fast:
        for obj in (fast, fast["g"]):
            for key in VALUES:
                a, b = ref.attrs[key], obj.attrs[key]
                assert type(a) is type(b) and np.array_equal(a, b), key
                assert ref.attrs.get_id(key).dtype == obj.attrs.get_id(key).dtype, key
                assert ref.attrs.get_id(key).shape == obj.attrs.get_id(key).shape, key


def test_an_existing_name_is_refused(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        write_attrs(h5, {"mpp": 0.5})
        with pytest.raises(Exception):
            write_attrs(h5, {"mpp": 0.25})
        assert h5.attrs["mpp"] == 0.5
