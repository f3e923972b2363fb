/* Embeds the assembled agent page (agent.bin, built by agent/CMakeLists.txt) into libimee. */
	.section .rodata.imee_agent, "a"
	.balign	4096
	.globl	imee_agent_image
	.type	imee_agent_image, @object
imee_agent_image:
	.incbin	"agent.bin"
	.globl	imee_agent_image_end
imee_agent_image_end:
	.size	imee_agent_image, imee_agent_image_end - imee_agent_image

	.section .note.GNU-stack, "", @progbits
