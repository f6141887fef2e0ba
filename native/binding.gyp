{
  "targets": [
    {
      "target_name": "batchgen_native",
      "sources": ["src/addon.cc"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O2", "-fopenmp"],
      "libraries": ["-ldnnl", "-lgomp"]
    }
  ]
}
