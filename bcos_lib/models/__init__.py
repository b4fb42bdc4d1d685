"""The shared architectures: ``ImageClassifier`` (:mod:`.base`), ``ConvNet`` (:mod:`.cnn`),
``ResNet`` (:mod:`.resnet`) and ``VisionTransformer`` (:mod:`.vit`), each taking its layer
families as arguments.  The builders that fill them with one paper's layers live in that
paper's package (``bcos_lib/methods/<paper>/model.py``).  Import the submodule you need: this
file imports nothing, so that a stage loads only the architecture its model uses."""
