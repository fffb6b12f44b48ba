"""The model families. Importing this package registers each of them."""

from imgzoo.models.basic_cnn import BasicCNN, basic_cnn
from imgzoo.models.dogbreed_transfer import DogBreedTransfer, dogbreed_transfer
from imgzoo.models.mnist_cnn import MnistCNN, mnist_cnn
from imgzoo.models.resnet_cifar import BasicBlock, ResNetCifar, resnet_cifar

__all__ = ["BasicBlock", "BasicCNN", "DogBreedTransfer", "MnistCNN", "ResNetCifar", "basic_cnn", "dogbreed_transfer",
           "mnist_cnn", "resnet_cifar"]  # fmt: skip
