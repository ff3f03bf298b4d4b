; rescuekit: 32-bit entry of the Linux base's BIOS kernel image (built by builder/bzimage.py; docs/linux-base.md).
;
; Debian's bzImage carries vmlinux xz-compressed and unpacks it with its own decompressor: ~0.2 s on a PC, ~6 s
; under QEMU TCG.  The BIOS image instead carries vmlinux already laid out at its physical addresses (GRUB inflates
; the file's lzop wrapper as it reads it) and this stub where the decompressor was.  It follows the 32-bit boot
; protocol (boot_params in ESI, flat segments, paging off, no stack promised), identity-maps the low 4 GiB, enters
; long mode and jumps to vmlinux's startup_64 with RSI = boot_params, as the decompressor (and kexec's ELF loader)
; does.  On x86_64 vmlinux runs at any 2 MiB-aligned physical address, and with no KASLR offset it needs no
; relocations.
;
; Protected-mode part: [this stub, 4 KiB][vmlinux image, FLAT_LEN bytes, a 4 KiB multiple] and, in init_size but
; not in the file, 2 MiB of slack and 6 page-table pages.  pref_address puts the image on 16 MiB; a loader that put
; it elsewhere gets it moved up to the next 2 MiB boundary (a backward copy: the stub sits below the image).
; FLAT_LEN and ENTRY_OFF (startup_64's offset in the image) come from the nasm command line.
bits 32
start:
        cli
        lea     esp, [esi + 0x1e4 + 4]      ; boot_params.scratch: a one-word stack for the call below
        call    .here
.here:  pop     ebp
        sub     ebp, .here - start          ; EBP = where the loader put this stub (4 KiB aligned)
        lea     esp, [ebp + stack_top - start]
        mov     edx, esi                    ; boot_params: in EDX, then (rdmsr writes EDX) in EDI
        lea     esi, [ebp + 0x1000]         ; the image as loaded
        mov     ebx, esi
        add     ebx, 0x1fffff
        and     ebx, ~0x1fffff              ; EBX = where it must run
        cmp     ebx, esi
        je      .placed
        std                                 ; overlapping move up: copy from the end
        lea     esi, [esi + FLAT_LEN - 4]
        lea     edi, [ebx + FLAT_LEN - 4]
        mov     ecx, FLAT_LEN / 4
        rep     movsd
.placed:
        cld
        lea     edi, [ebx + FLAT_LEN]       ; page tables right after the image
        mov     esi, edi
        xor     eax, eax
        mov     ecx, 6 * 1024               ; PML4, PDPT, 4 page directories
        rep     stosd
        lea     eax, [esi + 0x1000 + 3]     ; PML4[0] -> PDPT (present, writable)
        mov     [esi], eax
        lea     eax, [esi + 0x2000 + 3]     ; PDPT[0..3] -> the page directories
        lea     edi, [esi + 0x1000]
        mov     ecx, 4
.pdpt:  mov     [edi], eax
        add     eax, 0x1000
        add     edi, 8
        loop    .pdpt
        lea     edi, [esi + 0x2000]         ; 2048 x 2 MiB pages: 0..4 GiB, identity
        mov     eax, 0x83                   ; present, writable, large page
        mov     ecx, 2048
.pd:    mov     [edi], eax
        add     eax, 0x200000
        add     edi, 8
        loop    .pd
        lea     eax, [ebp + gdt - start]
        mov     [ebp + gdt_ptr + 2 - start], eax
        lgdt    [ebp + gdt_ptr - start]
        mov     eax, cr4
        or      eax, 1 << 5                 ; PAE
        mov     cr4, eax
        mov     cr3, esi
        mov     edi, edx
        mov     ecx, 0xC0000080             ; EFER
        rdmsr
        or      eax, 1 << 8                 ; LME
        wrmsr
        mov     eax, cr0
        or      eax, 0x80000001             ; PG | PE
        mov     cr0, eax
        lea     eax, [ebp + long_mode - start]
        push    dword 0x10
        push    eax
        retf

bits 64
long_mode:
        mov     eax, 0x18
        mov     ds, eax
        mov     es, eax
        mov     ss, eax
        mov     esi, edi                    ; RSI = boot_params (zero-extended)
        mov     eax, ebx
        add     rax, ENTRY_OFF
        jmp     rax

align 8
gdt:    dq      0, 0
        dq      0x00af9a000000ffff          ; 0x10: 64-bit code
        dq      0x00cf92000000ffff          ; 0x18: data
gdt_ptr:
        dw      gdt_ptr - gdt - 1
        dd      0
        times   4096 - 64 - ($ - start) db 0
stack_top:
        times   64 db 0
