"""`rtvi export`: model directories (ONNX fp32/int8, TorchScript, torch.export) for `rtvi serve --model DIR`.

From the command line::

    rtvi export --model resnet18 --output models/resnet18
    rtvi export --model models/resnet18 --int8 --calibration-images photos/ --output models/resnet18-int8
    rtvi export --from-module mypkg.models:build --labels labels.txt --output models/mine
    rtvi export --model resnet18 --to-cache     # where `rtvi serve --model resnet18` finds it, torch-free

From Python, for any torch classifier::

    from rtvi.export import Preprocessing, export_module
    export_module(model, "models/mine", labels=names,
                  preprocessing=Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))

Importing this package does not import torch; exporting does.
"""

from rtvi.export.errors import ExportError
from rtvi.export.modeldir import ModelCard
from rtvi.serving.modeldir import Preprocessing
from rtvi.export.run import export, export_module

__all__ = ["ExportError", "ModelCard", "Preprocessing", "export", "export_module"]
